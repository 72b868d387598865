"""A backend's record of the commands it ran, so that a replay is answered, not re-run.

Commands that change the host (``durable``) are written to an append-only file before the
handler starts and again when it ends, fsynced, so the record survives a crash of the
process or the machine.  A command found started but never finished after a restart is not
run again: it is answered with an error saying it was interrupted, because whether its side
effects happened cannot be known.  Read-only commands (ping, info) are remembered in memory
only: running one again after a restart changes nothing on the host.

The file is a stream of msgpack arrays ``["S", cmd_id, unix_time]`` and
``["D", cmd_id, unix_time, result]``.  A torn last record (crash mid-write) is cut off on
open, and records older than the retention time are compacted away.
"""

from __future__ import annotations

import collections
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import structlog

__all__ = ["Journal", "JournalEntry"]

log = structlog.get_logger("sci.journal")

_MEMORY_LIMIT = 20_000
_COMPACT_BYTES = 8 * 1024 * 1024


@dataclass(slots=True)
class JournalEntry:
    started: float
    #: [status, data, exit_status] once finished, else None
    result: list[Any] | None


class Journal:
    def __init__(self, path: Path | None, fsync: bool = True, retention_s: float = 7 * 86400) -> None:
        self.path = path
        self.fsync = fsync
        self.retention_s = retention_s
        self._durable: dict[str, JournalEntry] = {}
        self._volatile: collections.OrderedDict[str, JournalEntry] = collections.OrderedDict()
        self._fd: int | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._load(path)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def lookup(self, cmd_id: str) -> JournalEntry | None:
        return self._durable.get(cmd_id) or self._volatile.get(cmd_id)

    def started(self, cmd_id: str, durable: bool) -> None:
        entry = JournalEntry(time.time(), None)
        if durable:
            self._durable[cmd_id] = entry
            self._append(["S", cmd_id, entry.started])
        else:
            self._remember(cmd_id, entry)

    def finished(self, cmd_id: str, result: list[Any], durable: bool) -> None:
        if not durable:
            self._remember(cmd_id, JournalEntry(time.time(), result))
            return
        entry = self._durable.get(cmd_id)
        if entry is None:
            entry = self._durable[cmd_id] = JournalEntry(time.time(), None)
        entry.result = result
        self._append(["D", cmd_id, time.time(), result])

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _remember(self, cmd_id: str, entry: JournalEntry) -> None:
        self._volatile[cmd_id] = entry
        if len(self._volatile) > _MEMORY_LIMIT:
            self._volatile.popitem(last=False)

    def _append(self, record: list[Any]) -> None:
        if self._fd is None:
            return
        os.write(self._fd, msgpack.packb(record, use_bin_type=True))
        if self.fsync:
            os.fsync(self._fd)

    def _load(self, path: Path) -> None:
        if not path.exists():
            return
        data = path.read_bytes()
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(data)
        good_end = 0
        records = 0
        cutoff = time.time() - self.retention_s
        try:
            for record in unpacker:
                good_end = unpacker.tell()
                records += 1
                self._apply(record, cutoff)
        except (msgpack.UnpackException, ValueError) as exc:
            log.warning("journal_damaged", path=str(path), offset=good_end, detail=str(exc))
        torn = good_end < len(data)
        if torn or (len(data) > _COMPACT_BYTES and len(self._durable) * 2 < records):
            self._rewrite(path)
            log.info("journal_compacted", path=str(path), kept=len(self._durable), torn_tail=torn)
        interrupted = sum(1 for e in self._durable.values() if e.result is None)
        log.info("journal_loaded", path=str(path), commands=len(self._durable), interrupted=interrupted)

    def _apply(self, record: Any, cutoff: float) -> None:
        if not isinstance(record, list) or len(record) < 3:
            return
        kind, cmd_id, when = record[0], record[1], record[2]
        if not isinstance(cmd_id, str) or not isinstance(when, (int, float)):
            return
        if when < cutoff:
            self._durable.pop(cmd_id, None)
            return
        if kind == "S":
            self._durable[cmd_id] = JournalEntry(when, None)
        elif kind == "D" and len(record) == 4:
            entry = self._durable.setdefault(cmd_id, JournalEntry(when, None))
            entry.result = record[3]

    def _rewrite(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            for cmd_id, entry in self._durable.items():
                f.write(msgpack.packb(["S", cmd_id, entry.started], use_bin_type=True))
                if entry.result is not None:
                    f.write(msgpack.packb(["D", cmd_id, entry.started, entry.result], use_bin_type=True))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
