"""What tenants are told of hypervisors: an alias, never the host's name.

The alias is stable within an organization (two failures on one host read the same) and
meaningless outside it, like OpenStack's hostId: tenants can tell hosts apart without learning
the cloud's layout.  Admins see real names.
"""

from __future__ import annotations

import hashlib

__all__ = ["alias"]


def alias(org_id: str, host: str) -> str:
    return "host-" + hashlib.sha256(f"{org_id}:{host}".encode()).hexdigest()[:10]
