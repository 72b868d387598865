"""The leader's duties are one term: started once (all of them, or none if one fails), stopped once."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from frontend.leader import LeaderDuties, Term
from sci import TreeRoot, TreeSettings
from tests.api.conftest import make_frontend

SETTINGS = TreeSettings(heartbeat_interval=0.2, reattach_grace=1.0)


def _duties(db_url: str, tmp_path: Path, control_socket: Path) -> LeaderDuties:
    root = TreeRoot("tcp://127.0.0.1:0", SETTINGS)
    frontend = make_frontend(db_url, tmp_path / "frontend", tree=root)
    config = dataclasses.replace(frontend.config, control_socket=str(control_socket))
    return LeaderDuties(config, frontend.db, root, frontend.tasks, frontend.submit, frontend.consoles)


def test_a_term_starts_every_duty_and_stops_them_once(db_url: str, tmp_path: Path) -> None:
    duties = _duties(db_url, tmp_path, tmp_path / "run" / "frontend.sock")
    duties.start(7)
    try:
        assert duties.term is Term.LEADING and duties.root.running and duties.root.root_epoch == 7
        assert (tmp_path / "run" / "frontend.sock").exists()
    finally:
        duties.stop()
    assert duties.term is Term.ENDED and not duties.root.running
    duties.stop()  # a second stop (shutdown after a lost lease) does nothing
    with pytest.raises(RuntimeError, match="from ended to leading"):
        duties.start(1)


def test_a_duty_that_cannot_start_stops_those_that_did(db_url: str, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    duties = _duties(db_url, tmp_path, tmp_path / "file" / "frontend.sock")
    with pytest.raises(OSError):
        duties.start(1)
    assert duties.term is Term.ENDED and not duties.root.running
