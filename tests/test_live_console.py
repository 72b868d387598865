"""The live serial console of a real guest: clctl -> API (WebSocket) -> frontend -> tree -> backend
-> libvirt -> the guest's ttyS0, where the tiny guest runs a shell.

One guest serves every check: a command typed through ``clctl instance console --attach`` runs
and its output comes back; a second client watches the same output and cannot type until the
first leaves; strangers and bad requests are refused before any console opens; an idle console
closes; a guest that stops ends its console.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from frontend.console._session import TOKEN_COOKIE
from localcluster import LocalCluster, libvirtd
from localcluster import guest as tiny
from tests.support.cloudapi import (clctl_login, console_count, finished, offer_tiny, ok, running, tenant_client,
                                    until)

pytestmark = [pytest.mark.slow, pytest.mark.root]

CACHE = Path("/var/tmp/cloudland-guest")
TREE = {"heartbeat_interval": 0.5, "heartbeat_misses": 3, "reattach_grace": 5.0}
BOOT_TIMEOUT = 90.0
IDLE_S = 6
CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[1] / ".artefacts" / "console"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory, libvirt_daemons: None) -> Iterator[LocalCluster]:
    guest = tiny.build(CACHE)
    c = LocalCluster(tmp_path_factory.mktemp("live") / "cluster", agents=0, backends=1, tree=TREE,
                     ops_modules=["backend.compute"], api_config={"console_idle_timeout_s": IDLE_S},
                     backend_config={"compute": {"domain_type": "qemu", "cmdline": tiny.CMDLINE}})
    try:
        with running(c):
            api = offer_tiny(c, guest)
            finished(api, ok(api.post("/v1/instances", json={"name": "vm1", "flavor": "tiny", "image": "tiny"}), 202))
            until(lambda: console_count(api, "vm1", tiny.READY), BOOT_TIMEOUT, "the guest's READY line")
            api.close()
            yield c
    finally:
        libvirtd.purge_under(c.workdir)


@pytest.fixture
def api(cloud: LocalCluster) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cloud.api_url, verify=cloud.ssl_context(), timeout=60) as client:
        token = ok(client.post("/v1/tokens", json={"username": "admin", "password": cloud.admin_password()}), 201)
        client.headers["Authorization"] = f"Bearer {token['token']}"
        yield client


class Client:
    """A WebSocket client of the live console, its messages gathered on its own event loop's thread.

    websockets' asyncio client, as clctl's: its threaded one now and then loses a TLS answer."""

    def __init__(self, cloud: LocalCluster, token: str, instance: str = "vm1", mode: str = "write") -> None:
        self.output = bytearray()
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        opened: concurrent.futures.Future[tuple[asyncio.AbstractEventLoop, ClientConnection]] = \
            concurrent.futures.Future()
        self.reader = threading.Thread(target=asyncio.run, daemon=True,
                                       args=(self._run(_uri(cloud, instance, mode), cloud, token, opened),))
        self.reader.start()
        self.loop, self.ws = opened.result(30)

    async def _run(self, uri: str, cloud: LocalCluster, token: str,
                   opened: concurrent.futures.Future[tuple[asyncio.AbstractEventLoop, ClientConnection]]) -> None:
        try:
            ws = await connect(uri, ssl=cloud.ssl_context(), additional_headers={"Authorization": f"Bearer {token}"})
        except BaseException as exc:
            opened.set_exception(exc)
            return
        opened.set_result((asyncio.get_running_loop(), ws))
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    self.output += message
                else:
                    self.events.put(json.loads(message))
        except ConnectionClosed:
            pass

    def send(self, data: bytes) -> None:
        asyncio.run_coroutine_threadsafe(self.ws.send(data), self.loop).result(30)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.ws.close(), self.loop).result(30)

    def event(self, timeout: float = 30) -> dict[str, Any]:
        return self.events.get(timeout=timeout)

    def saw(self, text: str, timeout: float = 30) -> None:
        until(lambda: text.encode() in self.output, timeout, f"{text!r} on the console")

    def closed(self, timeout: float = 30) -> tuple[int, str]:
        self.reader.join(timeout)
        assert not self.reader.is_alive(), "the console did not close"
        close = self.ws.protocol.close_rcvd
        assert close is not None
        return close.code, close.reason


def _uri(cloud: LocalCluster, instance: str, mode: str) -> str:
    return f"wss://{cloud.api_url.removeprefix('https://')}/v1/instances/{instance}/console/live?mode={mode}"


def _token(api: httpx.Client) -> str:
    return str(api.headers["Authorization"].removeprefix("Bearer "))


def _refusal(cloud: LocalCluster, token: str | None, instance: str = "vm1", mode: str = "write") -> tuple[int, Any]:
    """The HTTP answer to a live console's WebSocket handshake the API refuses: its status and error."""
    answer = _handshake(f"{cloud.api_url}/v1/instances/{instance}/console/live?mode={mode}", cloud,
                        {"Authorization": f"Bearer {token}"} if token else {})
    return answer.status_code, answer.json()["error"]


def _handshake(url: str, cloud: LocalCluster, headers: dict[str, str]) -> httpx.Response:
    """The answer to a WebSocket handshake that is expected to be refused, sent with httpx:
    bounded by its timeout, whatever the server does."""
    answer = httpx.get(url, headers={"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                                     "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(), **headers},
                       verify=cloud.ssl_context(), timeout=15)
    assert answer.status_code != 101, "the handshake was accepted"
    return answer


def test_clctl_attaches_types_a_command_and_reads_its_output(cloud: LocalCluster, tmp_path: Path,
                                                             api: httpx.Client) -> None:
    home = tmp_path / "home"
    clctl_login(home, cloud)
    watcher = Client(cloud, _token(api), mode="watch")
    assert watcher.event() == {"event": "seat", "writer": False, "message": "you are watching"}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDLAND_")}
    proc = subprocess.Popen([sys.executable, "-m", "clctl", "instance", "console", "vm1", "--attach"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**clean, "HOME": str(home)})
    try:
        assert proc.stdin is not None and proc.stdout is not None
        seen = bytearray()
        stdout = proc.stdout

        def read() -> None:
            while chunk := stdout.read1(4096):
                seen.extend(chunk)

        threading.Thread(target=read, daemon=True).start()
        time.sleep(1)  # attached: its seat is given before anything is read from stdin
        proc.stdin.write(b"\recho LIVE-$((6 * 7))\r")
        proc.stdin.flush()
        until(lambda: b"LIVE-42" in seen, 30, "the command's output through clctl")
        watcher.saw("LIVE-42")  # a watcher sees what the writer's command printed
        proc.stdin.write(b"\x1d")  # Ctrl-]: detach
        proc.stdin.flush()
        assert proc.wait(15) == 0, proc.stderr.read() if proc.stderr else ""
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        assert "Ctrl-] detaches" in stderr and "you may type" in stderr and "Detached." in stderr, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    watcher.close()
    assert watcher.closed() == (1000, "")
    audit = ok(api.get("/v1/audit", params={"method": "WS"}))["items"]
    assert {(a["route"], a["status"]) for a in audit} >= {("/v1/instances/{instance}/console/live", 101)}


def test_one_client_types_and_the_next_in_line_gets_the_seat(cloud: LocalCluster, api: httpx.Client) -> None:
    first = Client(cloud, _token(api))
    assert first.event()["writer"] is True
    second = Client(cloud, _token(api))
    assert second.event() == {"event": "seat", "writer": False, "message": "another user is typing: you are watching"}
    second.send(b"\recho SECOND-$((1 + 1))\r")  # a watcher's input goes nowhere
    first.send(b"\recho FIRST-$((2 + 2))\r")
    second.saw("FIRST-4")
    first.saw("FIRST-4")
    assert b"SECOND-2" not in first.output
    first.close()
    assert second.event() == {"event": "seat", "writer": True, "message": "the user who was typing left: you may type"}
    second.send(b"\recho SECOND-$((1 + 2))\r")
    second.saw("SECOND-3")
    second.close()


def test_strangers_and_bad_requests_are_refused_before_a_console_opens(cloud: LocalCluster, api: httpx.Client) -> None:
    assert _refusal(cloud, None)[0] == 401
    assert _refusal(cloud, "not-a-token")[0] == 401
    status, error = _refusal(cloud, _token(api), mode="type")
    assert (status, error["field"], error["message"]) == (422, "mode", "mode: must be one of write, watch")
    assert _refusal(cloud, _token(api), instance="nope")[0] == 404
    other = tenant_client(cloud, api, "others")
    try:
        status, error = _refusal(cloud, _token(other))  # another organization's instance: not even seen
        assert (status, error["code"]) == (404, "not_found")
    finally:
        other.close()


def test_an_idle_console_closes_after_the_configured_timeout(cloud: LocalCluster, api: httpx.Client) -> None:
    client = Client(cloud, _token(api))
    assert client.event()["writer"] is True
    started = time.monotonic()
    code, reason = client.closed(IDLE_S * 4)
    assert (code, reason) == (4408, f"idle for {IDLE_S} s: attach again to go on")
    assert time.monotonic() - started >= IDLE_S - 1
    assert client.event() == {"event": "closed", "reason": reason}


def test_the_web_console_types_into_the_live_console_from_its_own_pages_only(cloud: LocalCluster,
                                                                              api: httpx.Client) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make installs it)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing: run sh scripts/ensure-test-tools.sh (as root)")
    instance = ok(api.get("/v1/instances/vm1"))["id"]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = browser.new_context(base_url=cloud.api_url, ignore_https_errors=True)
            page = context.new_page()
            page.set_default_timeout(20_000)
            page.goto("/ui/login")
            page.get_by_label("User name").fill("admin")
            page.get_by_label("Password").fill(cloud.admin_password())
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url("**/ui/instances")
            page.goto(f"/ui/instances/{instance}")
            page.get_by_role("link", name="Live console").click()
            sync_api.expect(page.locator("#live-status")).to_have_text("Connected: you may type.")
            screen = page.locator("#live-console")
            screen.press("Enter")
            screen.press_sequentially("echo WEB-$((3 * 5))")
            screen.press("Enter")
            sync_api.expect(screen).to_contain_text("WEB-15", timeout=30_000)
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / "live-console.png"), full_page=True)
            # The socket carries the session's cookie: a page of another origin may not open it.
            cookie = next(c for c in context.cookies() if c["name"] == TOKEN_COOKIE)
            context.close()
        finally:
            browser.close()
    refused = _handshake(f"{cloud.api_url}/ui/instances/{instance}/console/live/socket", cloud,
                         {"Origin": "https://evil.example", "Cookie": f"{TOKEN_COOKIE}={cookie['value']}"})
    assert refused.status_code == 403


def test_a_guest_that_stops_ends_its_console_and_a_stopped_one_has_none(cloud: LocalCluster, api: httpx.Client,
                                                                        tmp_path: Path) -> None:
    client = Client(cloud, _token(api))
    assert client.event()["writer"] is True
    accepted = ok(api.post("/v1/instances/vm1/stop", json={"timeout_s": 30}), 202)
    code, reason = client.closed(60)
    assert code == 4410 and reason.startswith("the console closed:"), reason
    finished(api, accepted)
    status, error = _refusal(cloud, _token(api))
    assert (status, error["message"]) == (409, "instance: instance 'vm1' is stopped: a live console needs it active")
    home = tmp_path / "home"
    clctl_login(home, cloud)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDLAND_")}
    refused = subprocess.run([sys.executable, "-m", "clctl", "instance", "console", "vm1", "--attach"],
                             stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
                             env={**clean, "HOME": str(home)})
    assert refused.returncode == 1, refused
    assert "instance 'vm1' is stopped: a live console needs it active" in refused.stderr, refused.stderr
