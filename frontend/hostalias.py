"""What people are told of hypervisors: operators read a host's name, tenants an alias of it.

The alias is stable within an organization (two failures on one host read the same) and
meaningless outside it, like OpenStack's hostId: tenants can tell hosts apart without learning
the cloud's layout.  Admins see real names, as in ``hypervisor list``.

A text kept for people to read later (a task's error, an instance's or a volume's fault, an
event's message) cannot know who will read it, so it names a host by ``mention(host)``, and
``shown`` turns each mention into what its reader may see.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["AS_SEEN", "alias", "mention", "seen", "shown"]

#: for the API's description of a text that ``shown`` renders
AS_SEEN = "hypervisors named as the caller knows them: admins by name, tenants by their organization's alias"

_MENTION = re.compile(r"\{host:([^{}\s]+)\}")


def alias(org_id: str, host: str) -> str:
    return "host-" + hashlib.sha256(f"{org_id}:{host}".encode()).hexdigest()[:10]


def seen(host: str, org_id: str, admin: bool) -> str:
    """``host`` as a reader sees it: its name for an admin, else its alias in ``org_id``."""
    return host if admin else alias(org_id, host)


def mention(host: str) -> str:
    return f"{{host:{host}}}"


def shown(text: str | None, org_id: str, admin: bool) -> str | None:
    """``text`` with every ``mention`` as ``seen`` by a reader; ``org_id`` owns what it is about."""
    if text is None:
        return None
    return _MENTION.sub(lambda found: seen(found[1], org_id, admin), text)
