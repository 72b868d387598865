"""``/docs``: Swagger UI served whole by the frontend (nothing from a CDN), under the console's headers."""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi.testclient import TestClient

#: any absolute address in a page or stylesheet: what would be fetched from elsewhere
_OUTSIDE = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//|url\(\s*["']?(?:https?:)?//|https?://""")


def test_the_page_and_its_assets_come_from_the_frontend(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert not _OUTSIDE.search(page.text), _OUTSIDE.search(page.text)
    assets = re.findall(r"""(?:src|href)="([^"]+)\"""", page.text)
    assert sorted(assets) == ["/docs/assets/favicon-32x32.png", "/docs/assets/swagger-ui-bundle.js",
                              "/docs/assets/swagger-ui.css"]
    for path in assets:
        asset = client.get(path)
        assert asset.status_code == 200 and asset.content, path
        assert asset.headers["x-content-type-options"] == "nosniff", path
    css = client.get("/docs/assets/swagger-ui.css").text
    assert "url(http" not in css.replace(" ", "") and "@import" not in css
    assert "/openapi.json" in page.text and client.get("/openapi.json").status_code == 200
    assert '"validatorUrl": null' in page.text  # Swagger UI would post the description to validator.swagger.io


def test_the_page_runs_only_its_own_files_and_its_one_inline_script(client: TestClient) -> None:
    page = client.get("/docs")
    policy = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
    assert policy["connect-src"] == "'self'" and policy["style-src"] == "'self'"
    inline = re.findall(r"<script>(.*?)</script>", page.text, re.DOTALL)
    assert len(inline) == 1
    digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
    assert policy["script-src"] == f"'self' 'sha256-{digest}'"
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["referrer-policy"] == "no-referrer"
    assert "/docs" not in [p for p in client.get("/openapi.json").json()["paths"]]
