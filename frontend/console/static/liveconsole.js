// The live serial console: the guest's output in a <pre>, the keys typed on it sent to the guest.
// A plain terminal: escape sequences the guest prints (colours, cursor moves) are left out, a
// carriage return alone and a backspace act on the last line. No library: nothing to ship but this.
"use strict";

(function () {
  const screen = document.getElementById("live-console");
  const status = document.getElementById("live-status");
  if (!screen || !status) {
    return;
  }
  const MAX_CHARS = 200000;
  const url = new URL(screen.dataset.socket, window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(url);
  socket.binaryType = "arraybuffer";
  const decoder = new TextDecoder();
  const encoder = new TextEncoder();
  let text = "";
  let told = false;

  // CSI (ESC [ ... final), OSC (ESC ] ... BEL or ESC \) and two-character escapes.
  const ESCAPES = /\x1b\[[0-?]*[ -\/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]/g;

  function show(chunk) {
    for (const c of chunk.replace(ESCAPES, "")) {
      if (c === "\b") {
        text = text.slice(0, -1);
      } else if (c === "\r") {
        continue;  // the \n that follows ends the line; a lone \r redraws it, which we cannot
      } else if (c === "\n" || c === "\t" || c >= " ") {
        text += c;
      }
    }
    if (text.length > MAX_CHARS) {
      text = text.slice(text.length - MAX_CHARS);
    }
    screen.textContent = text;
    screen.scrollTop = screen.scrollHeight;
  }

  socket.addEventListener("open", () => { status.textContent = "Connected."; });
  socket.addEventListener("message", (event) => {
    if (typeof event.data !== "string") {
      show(decoder.decode(event.data, { stream: true }));
      return;
    }
    const news = JSON.parse(event.data);
    if (news.event === "seat") {
      status.textContent = news.writer ? "Connected: " + news.message + "." : "Watching: " + news.message + ".";
    } else if (news.event === "closed") {
      told = true;
      status.textContent = "Closed: " + news.reason + ".";
    }
  });
  socket.addEventListener("close", (event) => {
    if (!told) {
      status.textContent = "Closed" + (event.reason ? ": " + event.reason : "") + ". Reload the page to attach again.";
    }
  });

  const KEYS = {
    Enter: "\r", Backspace: "\x7f", Tab: "\t", Escape: "\x1b", Delete: "\x1b[3~",
    ArrowUp: "\x1b[A", ArrowDown: "\x1b[B", ArrowRight: "\x1b[C", ArrowLeft: "\x1b[D", Home: "\x1b[H", End: "\x1b[F",
  };

  function send(data) {
    if (socket.readyState === WebSocket.OPEN) {
      socket.send(encoder.encode(data));
    }
  }

  screen.addEventListener("keydown", (event) => {
    let data = null;
    if (event.ctrlKey && !event.altKey && event.key.length === 1 && /[a-z@\[\\\]^_]/i.test(event.key)) {
      data = String.fromCharCode(event.key.toUpperCase().charCodeAt(0) & 31);
    } else if (KEYS[event.key] !== undefined) {
      data = KEYS[event.key];
    } else if (event.key.length === 1 && !event.ctrlKey && !event.metaKey) {
      data = event.key;
    }
    if (data !== null) {
      event.preventDefault();
      send(data);
    }
  });
  screen.addEventListener("paste", (event) => {
    event.preventDefault();
    send(event.clipboardData.getData("text"));
  });
  screen.focus();
})();
