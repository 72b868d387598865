"""The frontend's control socket file lives as long as its server: a clean stop removes it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

from frontend.control import ControlServer, request
from sci import TreeRoot


def _server(path: Path) -> ControlServer:
    # Only the tree's ops read the root; an unknown op is answered without one.
    return ControlServer(cast(TreeRoot, None), str(path))


def test_a_clean_stop_removes_the_socket_file(tmp_path: Path) -> None:
    path = tmp_path / "run" / "frontend.sock"
    server = _server(path)
    server.start()
    reply: dict[str, Any] = request(str(path), {"op": "nosuch"}, timeout=5)
    assert reply == {"error": "unknown control op 'nosuch'"}
    server.stop()
    assert not path.exists()


def test_a_file_that_replaced_the_servers_own_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "frontend.sock"
    server = _server(path)
    server.start()
    os.unlink(path)
    path.write_text("another frontend's\n")
    server.stop()
    assert path.read_text() == "another frontend's\n"
