"""Users of an organization.  Tenant admins manage their own organization's; admins, anyone's."""

from __future__ import annotations

from fastapi import APIRouter, Query, status
from pydantic import Field, field_validator
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ...auth import Caller, Role, hash_password
from ...db.models import Token, User
from ...errors import Conflict, Forbidden, NotFound
from ..deps import CallerDep, FrontendDep
from ..lookup import find_org
from ..refusals import refusals
from ..schemas import V1, Input, Items, Name, Ref, ResourceView

router = APIRouter(prefix=V1, tags=["users"])

Password = Field(min_length=8, max_length=1024, description="At least 8 characters")


def _role(value: str | None) -> str | None:
    return None if value is None else Role.parse(value).label


class UserCreate(Input):
    name: Name
    password: str = Password
    role: str = "member"
    org: Ref | None = Field(default=None, description="Organization id or name (admins only); default: yours")

    _check_role = field_validator("role")(_role)


class UserUpdate(Input):
    password: str | None = Field(default=None, min_length=8, max_length=1024)
    role: str | None = None
    status: str | None = Field(default=None, pattern="^(active|disabled)$")

    _check_role = field_validator("role")(_role)


class UserView(ResourceView):
    name: str
    role: str


def _grantable(caller: Caller, role: str) -> None:
    if Role.parse(role) > caller.role:
        raise Forbidden(f"you cannot grant the {role} role, which is above yours ({caller.role.label})", "role")


def _get(session: Session, caller: Caller, user_id: str) -> User:
    user = session.get(User, user_id) or session.execute(select(User).where(User.name == user_id)).scalar_one_or_none()
    if user is None or (not caller.is_admin and user.org_id != caller.org_id):
        raise NotFound("user", user_id)
    return user


@router.post("/users", status_code=status.HTTP_201_CREATED, response_model=UserView, summary="Create a user")
def create_user(body: UserCreate, caller: CallerDep, frontend: FrontendDep) -> User:
    caller.require(Role.tenant_admin, "creating a user")
    _grantable(caller, body.role)
    with frontend.db.transaction() as session:
        org_id = caller.org_id
        if body.org is not None:
            org_id = find_org(session, caller, body.org, "org").id
        if session.execute(select(User.id).where(User.name == body.name)).first() is not None:
            raise Conflict(f"a user named {body.name!r} exists already", "name")
        user = User(org_id=org_id, name=body.name, role=body.role, status="active",
                    password_hash=hash_password(body.password))
        session.add(user)
        session.flush()
        return user


@router.get("/users", response_model=Items[UserView],
            summary="List the users of your organization (admins: of any organization)",
            responses=refusals(404))
def list_users(caller: CallerDep, frontend: FrontendDep,
               org: Ref | None = Query(default=None, description="an organization's id or name (admins: any; "
                                                                 "others: their own); default: yours")
               ) -> Items[UserView]:
    with frontend.db.read() as session:
        org_id = caller.org_id if org is None else find_org(session, caller, org, "org").id
        rows = session.execute(select(User).where(User.org_id == org_id).order_by(User.name)).scalars()
        return Items(items=[UserView.model_validate(u) for u in rows])


@router.get("/users/{user_id}", response_model=UserView, summary="Show a user")
def show_user(user_id: Ref, caller: CallerDep, frontend: FrontendDep) -> User:
    with frontend.db.read() as session:
        return _get(session, caller, user_id)


@router.patch("/users/{user_id}", response_model=UserView, summary="Change a user's password, role or status")
def update_user(user_id: Ref, body: UserUpdate, caller: CallerDep, frontend: FrontendDep) -> User:
    with frontend.db.transaction() as session:
        user = _get(session, caller, user_id)
        if user.id != caller.user_id or body.role is not None or body.status is not None:
            caller.require(Role.tenant_admin, "changing another user, a role or a status")
        if Role.parse(user.role) > caller.role:
            # Not their password either: that would be a way into the higher role.
            raise Forbidden("you cannot change a user whose role is above yours")
        if body.role is not None:
            _grantable(caller, body.role)
            user.role = body.role
        if body.password is not None:
            user.password_hash = hash_password(body.password)
        if body.status is not None:
            user.status = body.status
        if body.password is not None or body.status == "disabled":
            session.execute(delete(Token).where(Token.user_id == user.id, Token.id != caller.token_id))
        session.flush()
        return user


@router.delete("/users/{user_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a user")
def delete_user(user_id: Ref, caller: CallerDep, frontend: FrontendDep) -> None:
    caller.require(Role.tenant_admin, "deleting a user")
    with frontend.db.transaction() as session:
        user = _get(session, caller, user_id)
        if user.id == caller.user_id:
            raise Conflict("you cannot delete yourself")
        if Role.parse(user.role) > caller.role:
            raise Forbidden("you cannot delete a user whose role is above yours")
        session.delete(user)
