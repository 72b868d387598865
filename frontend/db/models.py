"""The frontend's state: every table, written down once.  ``docs/state.md`` describes the same.

Each resource row has a UUID ``id``, the ``org_id`` of the organization that owns it,
``created_at``/``updated_at`` and a ``status``.  Capacity counters on hypervisors are only
changed by the scheduler's conditional updates (see ``frontend/scheduler.py``), never by
read-modify-write, so that two concurrent launches can never overbook a host.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (JSON, BigInteger, Boolean, Column, DateTime, Float, ForeignKey, Integer, LargeBinary, MetaData,
                        String, Table, Text, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, synonym

from ..images import disk_gb

__all__ = [
    "AuditRecord", "Base", "Enrolment", "Event", "FloatingIp", "Flavor", "FrontendProcess", "Hypervisor", "Image",
    "Instance", "Keypair", "RateBucket",
    "Leadership", "Network", "NodeKey", "Organization", "Port", "Router", "SecurityGroup", "SecurityGroupRule", "ServerGroup",
    "Snapshot", "Subnet", "Task", "TaskStep", "Token", "User", "Volume", "Zone", "new_id", "utcnow",
]


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


# Constraint names are fixed so that Alembic migrations name the same objects on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Resource:
    """The columns every resource has."""

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    status: Mapped[str] = mapped_column(String(16))


def org_fk() -> Mapped[str]:
    return mapped_column(String(36), ForeignKey("organizations.id"), index=True)


# Tenancy ---------------------------------------------------------------------------------

class Organization(Resource, Base):
    """A tenant: every resource but the cloud's own (hosts, zones) belongs to one; quotas bound its use."""

    __tablename__ = "organizations"
    name: Mapped[str] = mapped_column(String(64), unique=True)
    # Quotas: None means unlimited.
    quota_instances: Mapped[int | None] = mapped_column(Integer)
    quota_vcpus: Mapped[int | None] = mapped_column(Integer)
    quota_memory_mb: Mapped[int | None] = mapped_column(Integer)
    quota_volumes: Mapped[int | None] = mapped_column(Integer)
    quota_volume_gb: Mapped[int | None] = mapped_column(Integer)
    quota_networks: Mapped[int | None] = mapped_column(Integer)
    quota_floating_ips: Mapped[int | None] = mapped_column(Integer)
    quota_security_groups: Mapped[int | None] = mapped_column(Integer)
    quota_snapshots: Mapped[int | None] = mapped_column(Integer)
    quota_snapshot_gb: Mapped[int | None] = mapped_column(Integer)

    @property
    def org_id(self) -> str:
        return self.id


class User(Resource, Base):
    """Someone who logs in; ``role`` is admin, tenant-admin, member or reader; names are unique cloud-wide."""

    __tablename__ = "users"
    org_id: Mapped[str] = org_fk()
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))


class Token(Resource, Base):
    """A bearer token; only its SHA-256 is stored, so a stolen database holds no usable token."""

    __tablename__ = "tokens"
    org_id: Mapped[str] = org_fk()
    user_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)


# Hosts -----------------------------------------------------------------------------------

class Zone(Resource, Base):
    """An availability zone: hypervisors report theirs, users may ask for one at launch."""

    __tablename__ = "zones"
    org_id: Mapped[str] = org_fk()
    name: Mapped[str] = mapped_column(String(64), unique=True)


class Hypervisor(Resource, Base):
    """A backend that joined the tree.  ``status`` is up or down, as the tree last saw it."""

    __tablename__ = "hypervisors"
    org_id: Mapped[str] = org_fk()
    name: Mapped[str] = mapped_column(String(64), unique=True)
    zone_id: Mapped[str | None] = mapped_column(String(36), ForeignKey("zones.id"), index=True)
    #: False once an operator disables it: the scheduler skips it, its instances stay.
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    vcpus: Mapped[int] = mapped_column(Integer, default=0)
    memory_mb: Mapped[int] = mapped_column(Integer, default=0)
    disk_gb: Mapped[int] = mapped_column(Integer, default=0)
    vcpus_used: Mapped[int] = mapped_column(Integer, default=0)
    memory_mb_used: Mapped[int] = mapped_column(Integer, default=0)
    disk_gb_used: Mapped[int] = mapped_column(Integer, default=0)
    #: when the tree last reported the host up, and when its capacity was last read
    last_seen_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    facts_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    facts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Enrolment(Base):
    """A one-time, expiring token that lets one new node of the tree (an agent or a backend) enrol
    its CURVE public key.  Only the SHA-256 of the token's secret is stored, so a stolen database
    holds no usable token."""

    __tablename__ = "enrolments"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    #: the node id the token enrols, and nothing else
    name: Mapped[str] = mapped_column(String(64), index=True)
    #: agent or backend
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)
    #: when a node presented it; a used token is refused from then on
    used_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    #: the admin who issued it (no foreign key: the record outlives the user)
    created_by: Mapped[str | None] = mapped_column(String(36))


class NodeKey(Base):
    """The CURVE public key a node of the tree enrolled with; parents let only enrolled keys in.
    A revoked key stays on record, refused even at the root, until the node enrols again with a
    new key pair (a revoked node needs a new token for that)."""

    __tablename__ = "node_keys"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    node_id: Mapped[str] = mapped_column(String(64), unique=True)
    #: agent or backend
    role: Mapped[str] = mapped_column(String(16))
    #: Z85 text, 40 characters
    public_key: Mapped[str] = mapped_column(String(40), unique=True)
    enrolled_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    #: when an admin revoked it; None while the node may attach
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    #: the Ed25519 key the node signs its route claims with (Z85), as its first JOIN after
    #: this enrolment brought it; None until then
    sign_key: Mapped[str | None] = mapped_column(String(40))


# Compute ---------------------------------------------------------------------------------

class Flavor(Resource, Base):
    """A size instances come in; defined by admins, public ones visible to every organization."""

    __tablename__ = "flavors"
    org_id: Mapped[str] = org_fk()
    name: Mapped[str] = mapped_column(String(64), unique=True)
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    disk_gb: Mapped[int] = mapped_column(Integer)
    public: Mapped[bool] = mapped_column(Boolean, default=True)


class Image(Resource, Base):
    """A disk image: registered (queued), uploaded (saving), then active with its sha256 and size.  One made
    from an instance goes the same way, its file uploaded by the instance's hypervisor."""

    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    org_id: Mapped[str] = org_fk()
    name: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(8))
    #: sha256 hex of the image file; set at registration or computed at upload
    checksum: Mapped[str | None] = mapped_column(String(64))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    #: the size of the disk the image is, read from the file at upload (a qcow2 header's, a raw file's length)
    virtual_size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    #: the least memory the uploader says it boots with; null: no minimum
    min_memory_mb: Mapped[int | None] = mapped_column(Integer)
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    #: direct kernel boot, optional: ids of kernel and initrd files uploaded like images
    kernel_id: Mapped[str | None] = mapped_column(String(36))
    initrd_id: Mapped[str | None] = mapped_column(String(36))
    #: the instance whose disk it was made from (kept after the instance goes); null for an uploaded
    #: image.  Such an image's file comes from the instance's hypervisor, never from a user's upload.
    source_instance_id: Mapped[str | None] = mapped_column(String(36))

    @property
    def min_disk_gb(self) -> int | None:
        """The smallest flavor disk the image fits on; None until its file is uploaded."""
        return None if self.virtual_size_bytes is None else disk_gb(self.virtual_size_bytes)


class Keypair(Resource, Base):
    """An SSH public key put into instances by cloud-init; ``fingerprint`` as OpenSSH prints it."""

    __tablename__ = "keypairs"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    org_id: Mapped[str] = org_fk()
    name: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(128))


class ServerGroup(Resource, Base):
    """Instances in one anti-affinity group never share a hypervisor."""

    __tablename__ = "server_groups"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    org_id: Mapped[str] = org_fk()
    name: Mapped[str] = mapped_column(String(64))
    policy: Mapped[str] = mapped_column(String(16))


class Instance(Resource, Base):
    """A virtual machine: building, active, stopped, error, or a transitional status while a task runs."""

    __tablename__ = "instances"
    org_id: Mapped[str] = org_fk()
    name: Mapped[str] = mapped_column(String(64))
    flavor_id: Mapped[str] = mapped_column(String(36), ForeignKey("flavors.id"))
    image_id: Mapped[str] = mapped_column(String(36), ForeignKey("images.id"))
    keypair_id: Mapped[str | None] = mapped_column(String(36), ForeignKey("keypairs.id"))
    server_group_id: Mapped[str | None] = mapped_column(String(36), ForeignKey("server_groups.id"), index=True)
    zone_id: Mapped[str | None] = mapped_column(String(36), ForeignKey("zones.id"))
    hypervisor_id: Mapped[str | None] = mapped_column(String(36), ForeignKey("hypervisors.id"), index=True)
    user_data: Mapped[str | None] = mapped_column(Text)
    # What the instance holds on its host: copied from the flavor at launch and at resize.
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    disk_gb: Mapped[int] = mapped_column(Integer)
    #: running | shutoff | unknown, as the host last reported it
    power_state: Mapped[str] = mapped_column(String(16), default="unknown")
    #: why the instance is in error, for the operator
    fault: Mapped[str | None] = mapped_column(Text)


class Volume(Resource, Base):
    """A disk on one hypervisor's storage: creating, available, in-use, error; it outlives instances.

    A volume made empty has no hypervisor until it is first attached: it is made then, on the
    instance's host, and stays on that host from then on (it holds data).
    """

    __tablename__ = "volumes"
    org_id: Mapped[str] = org_fk()
    name: Mapped[str] = mapped_column(String(64))
    size_gb: Mapped[int] = mapped_column(Integer)
    #: None until the volume is made on a host (at its first attach, or from a snapshot)
    hypervisor_id: Mapped[str | None] = mapped_column(String(36), ForeignKey("hypervisors.id"), index=True)
    #: asked for at create: the volume attaches only to instances on hosts of this zone
    zone_id: Mapped[str | None] = mapped_column(String(36), ForeignKey("zones.id"))
    instance_id: Mapped[str | None] = mapped_column(String(36), ForeignKey("instances.id"), index=True)
    #: the device name the host gave at attach (vdb, ...); the guest may name it differently
    device: Mapped[str | None] = mapped_column(String(16))
    fault: Mapped[str | None] = mapped_column(Text)


class Snapshot(Resource, Base):
    """A point-in-time copy of a volume, a file of its own on the volume's host: creating, available,
    deleting, error.  It outlives its volume, and new volumes are made from it on that host."""

    __tablename__ = "snapshots"
    org_id: Mapped[str] = org_fk()
    name: Mapped[str] = mapped_column(String(64))
    #: the volume it was taken of; None once that volume is deleted
    volume_id: Mapped[str | None] = mapped_column(String(36), ForeignKey("volumes.id"), index=True)
    hypervisor_id: Mapped[str] = mapped_column(String(36), ForeignKey("hypervisors.id"), index=True)
    #: the volume's size when it was taken: what a new volume from it is at least
    size_gb: Mapped[int] = mapped_column(Integer)
    #: frozen (the guest agent froze its file systems), crash-consistent (a running guest without
    #: an agent: what a power cut would leave), offline (no guest was writing); None until taken
    consistency: Mapped[str | None] = mapped_column(String(24))
    fault: Mapped[str | None] = mapped_column(Text)


# Network ---------------------------------------------------------------------------------

port_security_groups = Table(
    "port_security_groups", Base.metadata,
    Column("port_id", String(36), ForeignKey("ports.id", ondelete="CASCADE"), primary_key=True),
    Column("security_group_id", String(36), ForeignKey("security_groups.id", ondelete="CASCADE"),
           primary_key=True),
)


class Network(Resource, Base):
    """A tenant's VPC.  ``external`` networks (admin only) hold the floating IP pools."""

    __tablename__ = "networks"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    org_id: Mapped[str] = org_fk()
    name: Mapped[str] = mapped_column(String(64))
    external: Mapped[bool] = mapped_column(Boolean, default=False)
    #: what ``api.lookup`` shares with every organization: external networks, to allocate floating IPs from
    public = synonym("external")


class Subnet(Resource, Base):
    """An IPv4 range of a network, carried on its own VXLAN segment; CIDRs may not overlap within a network."""

    __tablename__ = "subnets"
    org_id: Mapped[str] = org_fk()
    network_id: Mapped[str] = mapped_column(String(36), ForeignKey("networks.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    cidr: Mapped[str] = mapped_column(String(43))
    gateway: Mapped[str | None] = mapped_column(String(39))
    #: the VXLAN segment; unique in the whole cloud
    vni: Mapped[int] = mapped_column(Integer, unique=True)
    dhcp: Mapped[bool] = mapped_column(Boolean, default=True)
    dns_servers: Mapped[list[Any]] = mapped_column(JSON, default=list)
    #: [{"start", "end"}] sorted: the ranges ports and floating IPs are given addresses from; NULL: every host
    #: address but the gateway (``ipam.default_pools``), which follows the CIDR and gateway instead of copying them
    allocation_pools: Mapped[list[Any] | None] = mapped_column(JSON(none_as_null=True))


class Port(Resource, Base):
    """A NIC: a MAC and a fixed IP on a subnet, its security groups, and the instance it is bound to."""

    __tablename__ = "ports"
    __table_args__ = (UniqueConstraint("subnet_id", "ip_address"), UniqueConstraint("mac_address"))
    org_id: Mapped[str] = org_fk()
    network_id: Mapped[str] = mapped_column(String(36), ForeignKey("networks.id"), index=True)
    subnet_id: Mapped[str] = mapped_column(String(36), ForeignKey("subnets.id"), index=True)
    name: Mapped[str] = mapped_column(String(64), default="")
    mac_address: Mapped[str] = mapped_column(String(17))
    ip_address: Mapped[str] = mapped_column(String(39))
    instance_id: Mapped[str | None] = mapped_column(String(36), ForeignKey("instances.id"), index=True)
    #: made for an instance by its create call, and deleted with it; ports made on their own outlive it
    auto_delete: Mapped[bool] = mapped_column(Boolean, default=False)
    security_groups: Mapped[list["SecurityGroup"]] = relationship(secondary=port_security_groups)


class Router(Resource, Base):
    """The distributed router of one network: present on every hypervisor hosting the network."""

    __tablename__ = "routers"
    org_id: Mapped[str] = org_fk()
    name: Mapped[str] = mapped_column(String(64))
    network_id: Mapped[str] = mapped_column(String(36), ForeignKey("networks.id"), unique=True)
    #: SNAT egress to the outside world
    snat: Mapped[bool] = mapped_column(Boolean, default=True)


class FloatingIp(Resource, Base):
    """A public address from an external network's pool, associated with at most one port (DNAT/SNAT)."""

    __tablename__ = "floating_ips"
    __table_args__ = (UniqueConstraint("address"),)
    org_id: Mapped[str] = org_fk()
    network_id: Mapped[str] = mapped_column(String(36), ForeignKey("networks.id"), index=True)
    address: Mapped[str] = mapped_column(String(39))
    port_id: Mapped[str | None] = mapped_column(String(36), ForeignKey("ports.id"), unique=True)


class SecurityGroup(Resource, Base):
    """A set of firewall rules applied to ports; every organization gets a ``default`` group on first need."""

    __tablename__ = "security_groups"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    org_id: Mapped[str] = org_fk()
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(255), default="")
    rules: Mapped[list["SecurityGroupRule"]] = relationship(
        back_populates="group", cascade="all, delete-orphan", foreign_keys="SecurityGroupRule.security_group_id")


class SecurityGroupRule(Resource, Base):
    """One allowed flow: direction, protocol, port range, and a remote CIDR or group."""

    __tablename__ = "security_group_rules"
    org_id: Mapped[str] = org_fk()
    security_group_id: Mapped[str] = mapped_column(String(36), ForeignKey("security_groups.id", ondelete="CASCADE"),
                                                   index=True)
    direction: Mapped[str] = mapped_column(String(8))
    #: tcp, udp, icmp, any, or an IP protocol number (as text)
    protocol: Mapped[str] = mapped_column(String(8))
    port_min: Mapped[int | None] = mapped_column(Integer)
    port_max: Mapped[int | None] = mapped_column(Integer)
    icmp_type: Mapped[int | None] = mapped_column(Integer)
    icmp_code: Mapped[int | None] = mapped_column(Integer)
    remote_cidr: Mapped[str | None] = mapped_column(String(43))
    remote_group_id: Mapped[str | None] = mapped_column(String(36), ForeignKey("security_groups.id"))
    group: Mapped[SecurityGroup] = relationship(back_populates="rules", foreign_keys=[security_group_id])


# Work and what happened ------------------------------------------------------------------

class Task(Resource, Base):
    """A long operation: pending -> running -> succeeded | failed."""

    __tablename__ = "tasks"
    org_id: Mapped[str] = org_fk()
    user_id: Mapped[str | None] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(32))
    resource_type: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str] = mapped_column(String(36), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    steps: Mapped[list["TaskStep"]] = relationship(order_by="TaskStep.seq", cascade="all, delete-orphan")


class TaskStep(Base):
    """One journalled step of a task: a command sent through the tree, or a decision taken.

    A command's row (with its tree command id) is committed before the command is sent, so a
    restarted frontend sends it again under the same id and the hosts answer from their
    journals instead of running it twice.
    """

    __tablename__ = "task_steps"
    __table_args__ = (UniqueConstraint("task_id", "seq"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    task_id: Mapped[str] = mapped_column(String(36), ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    #: sent | done
    status: Mapped[str] = mapped_column(String(16))
    op: Mapped[str | None] = mapped_column(String(64))
    cmd_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    hosts: Mapped[list[Any]] = mapped_column(JSON, default=list)
    timeout_s: Mapped[float | None] = mapped_column(Float)
    body: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: for a command: host -> {status, message, exit_status, payload}; for a decision: {"value": ...}
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class Event(Base):
    """Something that happened that an operator may want to know: drift found, host down, task failed."""

    __tablename__ = "events"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    org_id: Mapped[str] = org_fk()
    kind: Mapped[str] = mapped_column(String(32), index=True)
    host: Mapped[str | None] = mapped_column(String(64), index=True)
    resource_type: Mapped[str | None] = mapped_column(String(32))
    resource_id: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)


class AuditRecord(Base):
    """One mutating call to the API (POST, PUT, PATCH or DELETE under /v1), refused ones included.

    Who made it, what it asked for and how it ended, never its body (passwords, user data).
    Rows are only added, and deleted once older than ``audit_retention_days`` (``retention.py``);
    none refers to another table, so the record of a call outlives the user, token and
    organization that made it.
    """

    __tablename__ = "audit_log"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    #: the caller; for a failed login, the account it tried if there is one; None when unknown
    user_id: Mapped[str | None] = mapped_column(String(36))
    user_name: Mapped[str | None] = mapped_column(String(64))
    org_id: Mapped[str | None] = mapped_column(String(36))
    #: the client's address (the one a reverse proxy on this host forwards, behind one)
    source: Mapped[str | None] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(8))
    #: the route's template (``/v1/instances/{instance}``), or the path itself when no route was reached
    route: Mapped[str] = mapped_column(String(255))
    #: the last parameter of the path: the id or name of the resource the call was about
    resource_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    #: the error's code (``forbidden``, ``rate_limited``, ...) when the call was refused or failed
    error: Mapped[str | None] = mapped_column(String(32))
    #: the frontend process that served the call (``frontends.holder``: node id, host, process id);
    #: None for calls recorded before frontends said
    frontend: Mapped[str | None] = mapped_column(String(255))


class IdempotencyKey(Base):
    """A change made with an ``Idempotency-Key`` header, so that the same call sent again is
    done once (``frontend/idempotency.py``).

    Written in the transaction of the call's first change: a call that changed nothing has no
    row, and one that did has it whatever became of its frontend afterwards.  ``status`` and
    ``body`` are its answer, filled in once it answered; kept a day, then deleted
    (``retention.py``).
    """

    __tablename__ = "idempotency_keys"
    #: whose key: a digest of the caller's token (keys are the client's own, unique per caller)
    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(2048))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    #: the answer's HTTP status; None until it answered
    status: Mapped[int | None] = mapped_column(Integer)
    #: the answer's body (JSON), None when it had none or it was too big to keep
    body: Mapped[bytes | None] = mapped_column(LargeBinary)


class Leadership(Base):
    """Which frontend leads (runs the tree's root, the tasks and the monitors), on PostgreSQL.

    One row, the lease.  Its times are the database's own (``now()`` in the statements of
    ``frontend/leadership.py``), never a frontend's clock, so frontends whose clocks disagree
    still agree on whether the lease ran out.  ``generation`` grows by one at every takeover:
    the fencing token the root puts on its commands.
    """

    __tablename__ = "leadership"
    #: always ``leader``: the table holds one lease
    name: Mapped[str] = mapped_column(String(16), primary_key=True)
    #: the frontend holding the lease: its node id, host and process id
    holder: Mapped[str] = mapped_column(String(255))
    #: the database session (``pg_backend_pid()``) the holder renews on: once it has ended and
    #: the holder has not renewed for two renewal intervals, the holder is dead and a standby
    #: takes over without waiting out the lease
    holder_pid: Mapped[int | None] = mapped_column(Integer)
    generation: Mapped[int] = mapped_column(BigInteger)
    #: when this holder took the lease (its term began)
    acquired_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    renewed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    #: past this instant, by the database's clock, any frontend may take the lease
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class FrontendProcess(Base):
    """A running frontend process, as it last said of itself: the frontends registry.

    On PostgreSQL every frontend, standby or leader, writes its row in the same statement as
    each attempt to take or renew the lease (``frontend/leadership.py``), so ``last_seen`` is
    at most a renewal interval old while it runs; on SQLite the one frontend writes it every
    few seconds.  Times are the database's (``now()``).  A process that stops cleanly deletes
    its row; one that dies leaves it to age (``frontend/registry.py``: shown as gone, then
    deleted a day later).  A restarted frontend is a new process and a new row.
    """

    __tablename__ = "frontends"
    #: the process: its node id, host and process id (the lease's holder when it leads)
    holder: Mapped[str] = mapped_column(String(255), primary_key=True)
    #: the frontend's ``node_id`` from its configuration
    node_id: Mapped[str] = mapped_column(String(64))
    #: the API it serves (``api.public_url``, else its https://host:port); None when not told
    api_url: Mapped[str | None] = mapped_column(String(255))
    #: leader | standby, at its last lease attempt
    role: Mapped[str] = mapped_column(String(16))
    #: the lease's generation it leads under (0 on SQLite); None for a standby
    generation: Mapped[int | None] = mapped_column(BigInteger)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class RateBucket(Base):
    """A rate limit's bucket for one key (a token, a source address, a user name), on PostgreSQL,
    where every frontend takes from the same buckets (``frontend/api/ratelimit.py``).

    The bucket is kept as the moment it is full again (the generic cell rate algorithm): a call
    moves it on by one call's worth of time, and is refused if that would put it further ahead
    than the burst allows, all in one statement.  A row whose moment has passed is a full bucket,
    the same as no row, and is deleted.  On PostgreSQL the table is UNLOGGED: a take writes no
    WAL and waits for no disk, and a database crash forgets the buckets, which only refills them.
    """

    __tablename__ = "rate_buckets"
    #: which limit: logins_by_address, failed_logins_by_name or calls_by_token
    limiter: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    #: when the bucket holds its whole burst again, by the database's clock
    full_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
