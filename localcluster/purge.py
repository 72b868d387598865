"""``python -m localcluster.purge DIR``: remove the libvirt domains and pools of a local cloud in DIR,
and its namespace hypervisors if it was killed before it could remove them.

``make clean`` runs it before deleting ``.run``, so no definition outlives the files it names.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from . import libvirtd, netlab


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m localcluster.purge DIR", file=sys.stderr)
        return 2
    path = Path(argv[0])
    if not path.exists() or os.geteuid() != 0:
        return 0
    if netlab.purge(path / "netlab"):
        print(f"removed the namespace hypervisors of {path}")
    if not libvirtd.qemu_available():
        return 0
    # Definitions outlive libvirtd (make run stops the one it started): start it to remove them.
    with libvirtd.running():
        removed = libvirtd.purge_under(path)
    print(f"removed {removed} libvirt domains and pools under {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
