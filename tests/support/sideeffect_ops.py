"""A test-only op with a visible side effect, to count how often a command really ran.

Backends load it through their ``ops_modules`` setting.  ``test.append`` appends one line to
a file; tests count the lines to prove that no command ran twice, whatever failed on the way.
"""

from __future__ import annotations

import os
import time
from typing import Any

from backend.registry import Op, OpError, OpRegistry


def append(args: dict[str, Any]) -> dict[str, Any]:
    path, line = args.get("path"), args.get("line")
    if not isinstance(path, str) or not isinstance(line, str):
        raise OpError("test.append needs path and line", 64)
    time.sleep(float(args.get("sleep_before", 0)))
    with open(path, "a") as f:
        f.write(f"{line} {os.getpid()}\n")
    time.sleep(float(args.get("sleep_after", 0)))
    return {"pid": os.getpid()}


def register(registry: OpRegistry, config: Any) -> None:
    registry.register(Op("test.append", append, durable=True))
