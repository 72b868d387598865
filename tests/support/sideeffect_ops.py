"""A test-only op with a visible side effect, to count how often a command really ran.

Backends load it through their ``ops_modules`` setting.  ``test.append`` appends one line to
a file; tests count the lines to prove that no command ran twice, whatever failed on the way.
The file must be under the system's temporary directory, where pytest's ``tmp_path`` is.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from backend.argcheck import FilePath, Number, Record, Text, optional
from backend.registry import Op, OpRegistry

APPEND_ARGS = Record({
    "path": FilePath((str(Path(tempfile.gettempdir()).resolve()),)),
    "line": Text(64, nonempty=True, one_line=True),
    "sleep_before": optional(Number(0, 60)),
    "sleep_after": optional(Number(0, 60)),
})


def append(args: dict[str, Any]) -> dict[str, Any]:
    time.sleep(args.get("sleep_before", 0))
    with open(args["path"], "a") as f:
        f.write(f"{args['line']} {os.getpid()}\n")
    time.sleep(args.get("sleep_after", 0))
    return {"pid": os.getpid()}


def register(registry: OpRegistry, config: Any) -> None:
    registry.register(Op("test.append", append, APPEND_ARGS, durable=True))
    # The same, declared idempotent: a run cut short by a restart runs again.
    registry.register(Op("test.append-idempotent", append, APPEND_ARGS, durable=True, idempotent=True))
