"""The console as a browser sees it, without one: a session's cookies, its forms posted, the
CSRF token and the refusal's reason read from the page."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.api.cloud import Cloud
from tests.api.conftest import Api

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Console:
    """One browser's session of the console, without the browser: cookies kept, forms posted."""

    def __init__(self, app: FastAPI, https: bool = False) -> None:
        self.client = TestClient(app, base_url="https://testserver" if https else "http://testserver",
                                 follow_redirects=False)

    def login(self, username: str, password: str) -> Any:
        form = self.client.get("/ui/login")
        return self.client.post("/ui/login", data={"csrf": csrf_of(form.text), "username": username,
                                                   "password": password})

    def get(self, path: str) -> Any:
        return self.client.get(path)

    def post(self, path: str, data: dict[str, str] | None = None, csrf: str | None = None) -> Any:
        """Post a form, with the CSRF token of a page of this session unless ``csrf`` says otherwise."""
        token = csrf_of(self.get("/ui/keypairs").text) if csrf is None else csrf
        return self.client.post(path, data={**(data or {}), **({"csrf": token} if token else {})})


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, html
    return found[1]


def reason_of(html: str) -> str:
    found = re.search(r'class="reason">([^<]*)<', html)
    assert found, html
    return found[1].replace("&#39;", "'").replace("&#34;", '"')


def posted_forms(html: str) -> list[str]:
    """Where the page's forms that change something (method post) go."""
    return re.findall(r'<form[^>]*method="post"[^>]*action="([^"]+)"', html)


def tenant_with_reader(cloud: Cloud, org: str) -> Api:
    """Organization ``org``'s tenant admin (``<org>-user``), with a reader of it (``<org>-reader``)."""
    api = cloud.admin.tenant(org)
    cloud.admin.ok("post", "/v1/users", 201, json={"name": f"{org}-reader", "password": "password-of-reader",
                                                   "role": "reader", "org": api.who["org_id"]})
    return api
