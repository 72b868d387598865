from __future__ import annotations

from pathlib import Path

from sci.journal import Journal


def test_durable_records_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    j = Journal(path)
    j.started("c1", durable=True)
    j.finished("c1", [0, {"x": 1}, 0], durable=True)
    j.started("c2", durable=True)  # still running when the process dies
    j.started("r1", durable=False)
    j.finished("r1", [0, {}, 0], durable=False)
    j.close()
    again = Journal(path)
    assert again.lookup("c1").result == [0, {"x": 1}, 0]
    assert again.lookup("c2") is not None and again.lookup("c2").result is None
    assert again.lookup("r1") is None  # read-only ops are not written down


def test_torn_tail_is_cut_and_old_records_expire(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    j = Journal(path)
    j.started("c1", durable=True)
    j.finished("c1", [0, None, 0], durable=True)
    j.close()
    with open(path, "ab") as f:
        f.write(b"\x94\xa1D")  # a record cut off mid-write
    again = Journal(path)
    assert again.lookup("c1").result == [0, None, 0]
    again.started("c3", durable=True)
    again.close()
    assert Journal(path).lookup("c3") is not None
    assert Journal(path, retention_s=-1).lookup("c1") is None
