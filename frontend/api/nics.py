"""An instance's network interfaces as its create call names them, resolved for the caller.

The addresses themselves come from ``frontend/ipam.py``; this module is the API's side: it
finds the caller's networks, subnets, ports and security groups (404 for anyone else's) and
names each refusal by its field (``nics[1].ip``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..auth import Caller
from ..db.models import Network, Port, SecurityGroup, Subnet
from ..errors import Conflict
from ..ipam import DEFAULT_GROUP, create_port, default_security_group
from .lookup import find
from .schemas import IPv4, Ref

__all__ = ["NicSpec", "allocate_instance_ports", "resolve_security_groups", "resolve_subnet"]


class NicSpec(BaseModel):
    """One network interface of an instance being created: on a network, on a subnet, or an existing port."""

    model_config = ConfigDict(extra="forbid")

    network: Ref | None = Field(default=None, description="a network: the port goes on its first subnet")
    subnet: Ref | None = None
    port: Ref | None = Field(default=None, description="an unbound port of yours")
    ip: IPv4 | None = Field(default=None, description="a fixed IP (with network or subnet); default: the next free")
    security_groups: list[Ref] | None = Field(default=None, max_length=16,
                                               description=f"default: the {DEFAULT_GROUP!r} group")

    @model_validator(mode="after")
    def _one_place(self) -> NicSpec:
        if sum(x is not None for x in (self.network, self.subnet, self.port)) != 1:
            raise ValueError("give exactly one of network, subnet or port")
        if self.port is not None and self.ip is not None:
            raise ValueError("an existing port has its IP already; give ip only with network or subnet")
        return self


def resolve_security_groups(session: Session, caller: Caller, refs: list[str] | None,
                            field: str = "security_groups") -> list[SecurityGroup]:
    """The caller's groups named by ``refs``, or the default group when ``refs`` is None (named,
    the default group is made on this first need too)."""
    if refs is None:
        return [default_security_group(session, caller.org_id)]
    groups: dict[str, SecurityGroup] = {}
    for i, ref in enumerate(refs):
        group = (default_security_group(session, caller.org_id) if ref == DEFAULT_GROUP
                 else find(session, SecurityGroup, ref, caller, "security group", f"{field}[{i}]"))
        groups[group.id] = group
    return list(groups.values())


def resolve_subnet(session: Session, caller: Caller, network: str | None, subnet: str | None,
                   prefix: str = "") -> Subnet:
    """The caller's subnet named by ``subnet``, or the first subnet of ``network``."""
    if subnet is not None:
        row: Subnet = find(session, Subnet, subnet, caller, "subnet", f"{prefix}subnet")
        return row
    assert network is not None
    net: Network = find(session, Network, network, caller, "network", f"{prefix}network")
    first = session.execute(select(Subnet).where(Subnet.network_id == net.id)
                            .order_by(Subnet.created_at, Subnet.id).limit(1)).scalar_one_or_none()
    if first is None:
        raise Conflict(f"network {net.name!r} has no subnet; create one first", f"{prefix}network")
    return first


def allocate_instance_ports(session: Session, caller: Caller, nics: list[NicSpec], instance_id: str) -> list[Port]:
    """Bind the instance's NICs: new ports (deleted with the instance) or the caller's unbound ones."""
    ports = []
    for i, nic in enumerate(nics):
        prefix = f"nics[{i}]."
        if nic.port is not None:
            port: Port = find(session, Port, nic.port, caller, "port", f"{prefix}port")
            session.refresh(port, with_for_update=True)  # another launch may be binding it right now
            if port.instance_id is not None:
                raise Conflict(f"port {nic.port!r} is bound to instance {port.instance_id}", f"{prefix}port")
            port.instance_id = instance_id
            if nic.security_groups is not None:
                port.security_groups = resolve_security_groups(session, caller, nic.security_groups,
                                                               f"{prefix}security_groups")
            session.flush()
        else:
            subnet = resolve_subnet(session, caller, nic.network, nic.subnet, prefix)
            groups = resolve_security_groups(session, caller, nic.security_groups, f"{prefix}security_groups")
            port = create_port(session, caller.org_id, subnet, groups, ip=nic.ip, instance_id=instance_id,
                               auto_delete=True, prefix=prefix)
        ports.append(port)
    return ports
