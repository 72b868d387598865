"""An instance's power state changed outside the API: a guest that crashed, shut itself down, was
paused on a disk error, or was started or stopped by hand on its host.

Hosts tell the root at once (an ``instance.power`` notice, sent by the compute driver from
libvirt's lifecycle events, ``docs/ops.md``); the reconcile finds what a notice missed. Either
way ``follow_power`` moves a settled instance's status with its power state (crashed and paused
are statuses of their own, so that a user sees them and may start the instance again), keeps
why in ``fault``, and records it in the owner's events.

An instance that a task is changing is left alone: the task's own op is the likely cause, and
the task settles the instance itself. So is a notice older than the instance's last change.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from .db import Database
from .db.models import Event, Hypervisor, Instance
from .lifecycle import INSTANCE_SETTLED, STATUS_OF_POWER

__all__ = ["POWER_NOTICE", "PowerNotices", "follow_power"]

log = structlog.get_logger("frontend.powerstate")

#: the notice's topic, as the compute driver sends it
POWER_NOTICE = "instance.power"
_CAUSE_CHARS = 200


def follow_power(session: Session, instance: Instance, host: str, power: str, cause: str) -> bool:
    """Give settled ``instance`` the host's ``power`` state, for ``cause``; whether it changed."""
    if instance.status not in INSTANCE_SETTLED or power == instance.power_state or power not in STATUS_OF_POWER:
        return False
    was = instance.status
    instance.power_state = power
    instance.status = STATUS_OF_POWER[power]
    # Why a guest is not running is the user's first question; a running one needs no reason.
    instance.fault = cause if power in ("crashed", "paused") else None
    session.add(Event(org_id=instance.org_id, kind=f"instance.{power}", host=host, resource_type="instance",
                      resource_id=instance.id, message=f"instance {instance.name} {cause}"))
    log.info("instance_power_followed", instance=instance.id, host=host, was=was, status=instance.status,
             power=power, cause=cause)
    return True


class PowerNotices:
    """The handler of hosts' ``instance.power`` notices: power changes applied to the state."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def __call__(self, host: str, body: Any) -> None:
        instance_id, power, cause, at = _parse(body)
        with self.db.transaction() as session:
            instance = session.execute(
                select(Instance).join(Hypervisor, Instance.hypervisor_id == Hypervisor.id)
                .where(Instance.id == instance_id, Hypervisor.name == host).with_for_update()).scalar()
            if instance is None:
                # Not placed there: a launch's leftover or a guest deleted meanwhile; the
                # reconcile reports what should not be on a host.
                log.info("notice_ignored", host=host, topic=POWER_NOTICE, instance=instance_id,
                         reason="not on that host")
                return
            if instance.updated_at > at:
                log.info("notice_ignored", host=host, topic=POWER_NOTICE, instance=instance_id,
                         reason="older than the instance's last change")
                return
            follow_power(session, instance, host, power, cause)


def _parse(body: Any) -> tuple[str, str, str, dt.datetime]:
    if not isinstance(body, dict):
        raise TypeError("the body is not a map")
    instance_id, power, cause, at = body["instance"], body["power_state"], body["cause"], body["at"]
    if not isinstance(instance_id, str) or len(instance_id) > 64:
        raise ValueError("instance: not an instance id")
    if power not in STATUS_OF_POWER:
        raise ValueError(f"power_state: not one of {', '.join(sorted(STATUS_OF_POWER))}")
    if not isinstance(cause, str) or not isinstance(at, (int, float)) or isinstance(at, bool):
        raise TypeError("cause and at: a text and a time")
    # The state's times are naive UTC (models.utcnow).
    when = dt.datetime.fromtimestamp(at, dt.UTC).replace(tzinfo=None)
    return instance_id, str(power), cause[:_CAUSE_CHARS], when
