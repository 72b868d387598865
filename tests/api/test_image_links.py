"""Hypervisors download image files over signed, expiring links instead of tokens."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from frontend.services import Frontend
from tests.api.conftest import Api, error_of
from tests.support.qcow2 import fake_qcow2

QCOW2 = fake_qcow2(length=1024)


def _path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_a_signed_link_serves_the_file_without_a_token(admin: Api, frontend: Frontend) -> None:
    image = admin.ok("post", "/v1/images", 201, json={"name": "tiny", "format": "qcow2"})
    admin.ok("put", f"/v1/images/{image['id']}/file", content=QCOW2)
    link = frontend.image_links.url(image["id"])
    assert link.startswith(frontend.config.api.url + "/v1/images/")
    anonymous = admin.client
    response = anonymous.get(_path(link))
    assert response.status_code == 200 and response.content == QCOW2

    tampered = _path(link)[:-1] + ("0" if link[-1] != "0" else "1")
    assert anonymous.get(tampered).status_code == 401
    other = frontend.image_links.url("00000000-0000-0000-0000-000000000000")
    assert anonymous.get(_path(other).replace("00000000-0000-0000-0000-000000000000", image["id"])).status_code == 401
    frontend.image_links.ttl_s = -1
    expired = anonymous.get(_path(frontend.image_links.url(image["id"])))
    assert expired.status_code == 401 and "expired" in error_of(expired)["reason"]
    assert anonymous.get(f"/v1/images/{image['id']}/file").status_code == 401


def test_a_signature_that_is_not_64_hex_digits_is_invalid(admin: Api, frontend: Frontend) -> None:
    # Found by the API fuzzer: a non-ASCII signature on an unexpired link made hmac.compare_digest
    # raise, and the download answered 500.
    image = admin.ok("post", "/v1/images", 201, json={"name": "tiny", "format": "qcow2"})
    admin.ok("put", f"/v1/images/{image['id']}/file", content=QCOW2)
    expires = int(time.time()) + 3600
    for signature in ("é" * 64, "A" * 64, "0" * 63, "0" * 65):
        response = admin.client.get(f"/v1/images/{image['id']}/file", params={"expires": expires,
                                                                             "signature": signature})
        assert response.status_code == 422 and error_of(response)["field"] == "signature", signature
