"""Per-organization quotas, checked in the same transaction that creates the resource.

The organization's row is locked first, so two concurrent creates cannot both pass a check
that only one of them fits (on SQLite every writing transaction is serialised anyway).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .db.engine import lock_org
from .db.models import FloatingIp, Instance, Network, SecurityGroup, Snapshot, Volume
from .errors import QuotaExceeded

__all__ = ["check"]

# quota name -> how the organization's current use is counted
_USAGE: dict[str, tuple[Any, Any]] = {
    "instances": (Instance, func.count(Instance.id)),
    "vcpus": (Instance, func.coalesce(func.sum(Instance.vcpus), 0)),
    "memory_mb": (Instance, func.coalesce(func.sum(Instance.memory_mb), 0)),
    "volumes": (Volume, func.count(Volume.id)),
    "volume_gb": (Volume, func.coalesce(func.sum(Volume.size_gb), 0)),
    "networks": (Network, func.count(Network.id)),
    "floating_ips": (FloatingIp, func.count(FloatingIp.id)),
    "security_groups": (SecurityGroup, func.count(SecurityGroup.id)),
    "snapshots": (Snapshot, func.count(Snapshot.id)),
    "snapshot_gb": (Snapshot, func.coalesce(func.sum(Snapshot.size_gb), 0)),
}

QUOTAS = tuple(_USAGE)


def usage(session: Session, org_id: str, name: str) -> int:
    model, measure = _USAGE[name]
    return int(session.execute(select(measure).where(model.org_id == org_id)).scalar_one())


def check(session: Session, org_id: str, **wanted: int) -> None:
    """Raise QuotaExceeded unless the organization can take ``wanted`` more of each quota."""
    org = lock_org(session, org_id)
    for name, more in wanted.items():
        limit = getattr(org, f"quota_{name}")
        if limit is None or more <= 0:
            continue
        used = usage(session, org_id, name)
        if used + more > limit:
            raise QuotaExceeded(f"the organization's {name} quota is {limit}; {used} in use, {more} more asked", name)
