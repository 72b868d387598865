"""Server groups: instances launched into an anti-affinity group never share a hypervisor."""

from __future__ import annotations

from collections import defaultdict
from typing import Literal

from fastapi import APIRouter, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from ...auth import Role
from ...db.models import Instance, ServerGroup
from ...errors import Conflict
from ..deps import CallerDep, FrontendDep
from ..lookup import find, get_owned, owned, unique_name
from ..schemas import V1, Input, Items, Name, Ref, ResourceView

router = APIRouter(prefix=V1, tags=["server-groups"])


class ServerGroupCreate(Input):
    name: Name
    policy: Literal["anti-affinity"]


class ServerGroupView(ResourceView):
    name: str
    policy: str
    #: ids of the instances in the group
    members: list[str]


def _members(session: Session, group_ids: list[str]) -> dict[str, list[str]]:
    members: dict[str, list[str]] = defaultdict(list)
    rows = session.execute(select(Instance.server_group_id, Instance.id)
                           .where(Instance.server_group_id.in_(group_ids)).order_by(Instance.created_at, Instance.id))
    for group_id, instance_id in rows:
        if group_id is not None:
            members[group_id].append(instance_id)
    return members


def _view(group: ServerGroup, members: list[str]) -> ServerGroupView:
    return ServerGroupView(id=group.id, org_id=group.org_id, status=group.status, created_at=group.created_at,
                           updated_at=group.updated_at, name=group.name, policy=group.policy, members=members)


@router.post("/server-groups", status_code=status.HTTP_201_CREATED, response_model=ServerGroupView,
             summary="Create a server group")
def create_server_group(body: ServerGroupCreate, caller: CallerDep, frontend: FrontendDep) -> ServerGroupView:
    caller.require(Role.member, "creating a server group")
    with frontend.db.transaction() as session:
        unique_name(session, ServerGroup, body.name, "server group", org_id=caller.org_id)
        group = ServerGroup(org_id=caller.org_id, status="active", name=body.name, policy=body.policy)
        session.add(group)
        session.flush()
        return _view(group, [])


@router.get("/server-groups", response_model=Items[ServerGroupView],
            summary="List your organization's server groups and their members")
def list_server_groups(caller: CallerDep, frontend: FrontendDep) -> Items[ServerGroupView]:
    with frontend.db.read() as session:
        groups = list(session.execute(owned(ServerGroup, caller).order_by(ServerGroup.name)).scalars())
        members = _members(session, [g.id for g in groups])
        return Items(items=[_view(g, members[g.id]) for g in groups])


@router.get("/server-groups/{group}", response_model=ServerGroupView,
            summary="Show a server group and its members, by id or name")
def show_server_group(group: Ref, caller: CallerDep, frontend: FrontendDep) -> ServerGroupView:
    with frontend.db.read() as session:
        row = find(session, ServerGroup, group, caller, "server group")
        return _view(row, _members(session, [row.id])[row.id])


@router.delete("/server-groups/{group}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a server group without members")
def delete_server_group(group: Ref, caller: CallerDep, frontend: FrontendDep) -> None:
    caller.require(Role.member, "deleting a server group")
    with frontend.db.transaction() as session:
        # Locked as the scheduler locks it to place a member, so a placement and this deletion take turns.
        row = get_owned(session, ServerGroup, find(session, ServerGroup, group, caller, "server group").id, caller,
                        "server group", lock=True)
        members = _members(session, [row.id])[row.id]
        if members:
            raise Conflict(f"{len(members)} instances are members of this group")
        session.delete(row)
