// The image upload form's progress. The form works without this script; with it, the same form
// is sent by XMLHttpRequest, whose upload events say how much of the file has gone. The page's
// policy lets it run (script-src 'self') and post back to the console (connect-src 'self') only.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  var form = document.getElementById("upload");
  if (!form) {
    return;
  }
  var bar = document.getElementById("upload-progress");
  var status = document.getElementById("upload-status");
  var button = form.querySelector("button[type=submit]");

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var request = new XMLHttpRequest();
    request.open("POST", form.action);
    request.upload.addEventListener("progress", function (progress) {
      if (progress.lengthComputable) {
        bar.max = progress.total;
        bar.value = progress.loaded;
        status.textContent = Math.floor(100 * progress.loaded / progress.total) + "% sent";
      }
    });
    request.upload.addEventListener("load", function () {
      status.textContent = "Sent; the frontend is checking the file";
    });
    request.addEventListener("load", function () {
      if (request.status < 400) {
        // The answer followed the console's redirect: go where it led, the images list.
        window.location.assign(request.responseURL);
        return;
      }
      // A refusal is the console's error page, with the API's field and reason: show it.
      document.open();
      document.write(request.responseText);
      document.close();
    });
    request.addEventListener("error", function () {
      status.textContent = "The upload failed: the connection to the frontend was lost";
      button.disabled = false;
    });
    bar.hidden = false;
    button.disabled = true;
    status.textContent = "Sending";
    request.send(new FormData(form));
  });
});
