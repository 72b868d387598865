"""Flavors: the sizes instances come in.  Admins define them; every organization sees public ones."""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import Field
from sqlalchemy import func, select

from ...auth import Role
from ...db.models import Flavor, Instance
from ...errors import Conflict
from ...images import MAX_DISK_GB
from ..deps import CallerDep, FrontendDep
from ..lookup import find, owned, unique_name
from ..refusals import refusals
from ..schemas import V1, Input, Items, MemoryMb, Name, Ref, ResourceView

router = APIRouter(prefix=V1, tags=["flavors"])


class FlavorCreate(Input):
    name: Name
    vcpus: int = Field(ge=1, le=512)
    memory_mb: MemoryMb
    disk_gb: int = Field(ge=1, le=MAX_DISK_GB)
    public: bool = Field(default=True, description="Seen by every organization; false: by the admins' only")


class FlavorView(ResourceView):
    name: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    public: bool


@router.post("/flavors", status_code=status.HTTP_201_CREATED, response_model=FlavorView, summary="Create a flavor")
def create_flavor(body: FlavorCreate, caller: CallerDep, frontend: FrontendDep) -> Flavor:
    caller.require(Role.admin, "creating a flavor")
    with frontend.db.transaction() as session:
        unique_name(session, Flavor, body.name, "flavor")
        flavor = Flavor(org_id=caller.org_id, status="active", **body.model_dump())
        session.add(flavor)
        session.flush()
        return flavor


@router.get("/flavors", response_model=Items[FlavorView], summary="List flavors")
def list_flavors(caller: CallerDep, frontend: FrontendDep) -> Items[FlavorView]:
    with frontend.db.read() as session:
        rows = session.execute(owned(Flavor, caller, shared=True).order_by(Flavor.vcpus, Flavor.memory_mb)).scalars()
        return Items(items=[FlavorView.model_validate(f) for f in rows])


@router.get("/flavors/{flavor}", response_model=FlavorView, summary="Show a flavor by id or name",
            responses=refusals(409))
def show_flavor(flavor: Ref, caller: CallerDep, frontend: FrontendDep) -> Flavor:
    with frontend.db.read() as session:
        return find(session, Flavor, flavor, caller, "flavor", shared=True)


@router.delete("/flavors/{flavor}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete an unused flavor")
def delete_flavor(flavor: Ref, caller: CallerDep, frontend: FrontendDep) -> None:
    caller.require(Role.admin, "deleting a flavor")
    with frontend.db.transaction() as session:
        row = find(session, Flavor, flavor, caller, "flavor")
        used = session.execute(select(func.count()).where(Instance.flavor_id == row.id)).scalar()
        if used:
            raise Conflict(f"{used} instances use this flavor")
        session.delete(row)
