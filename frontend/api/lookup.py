"""Finding rows on behalf of a caller, always within the caller's organization.

Everything the API reads by id or name goes through here, so that another organization's
resource answers exactly like one that does not exist (404), and cannot be probed.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from ..auth import Caller
from ..db.models import Organization, Zone
from ..errors import Conflict, NotFound

__all__ = ["find", "find_org", "find_zone", "get_owned", "owned", "unique_name"]

M = TypeVar("M")


def owned(model: type[M], caller: Caller, shared: bool = False, all_orgs: bool = False) -> Select[M]:
    """SELECT of the caller's rows of ``model``; with ``shared``, public rows of other organizations too;
    with ``all_orgs`` (an admin's view, which ``allorgs`` allowed), every organization's."""
    query = select(model)
    if all_orgs:
        assert caller.is_admin, "only an admin may see every organization's rows"
        return query
    col = model.org_id  # type: ignore[attr-defined]
    if shared:
        return query.where(or_(col == caller.org_id, model.public.is_(True)))  # type: ignore[attr-defined]
    return query.where(col == caller.org_id)


def get_owned(session: Session, model: type[M], ident: str, caller: Caller, kind: str, field: str | None = None,
              shared: bool = False, lock: bool = False) -> M:
    """The row with this id, if the caller may see it; else 404."""
    query = owned(model, caller, shared).where(model.id == ident)  # type: ignore[attr-defined]
    if lock:
        query = query.with_for_update()
    row = session.execute(query).scalar_one_or_none()
    if row is None:
        raise NotFound(kind, ident, field)
    return row


def find(session: Session, model: type[M], ref: str, caller: Caller, kind: str, field: str | None = None,
         shared: bool = False, all_orgs: bool = False) -> M:
    """The row named by ``ref`` (an id or a name) among those the caller may see; else 404.

    The caller's own rows win over shared ones (or, with ``all_orgs``, other organizations') of the
    same name; two others with one name are ambiguous and must be named by id.
    """
    query = owned(model, caller, shared, all_orgs)
    by_id = session.execute(query.where(model.id == ref)).scalar_one_or_none()  # type: ignore[attr-defined]
    if by_id is not None:
        return by_id
    rows = list(session.execute(query.where(model.name == ref)).scalars())  # type: ignore[attr-defined]
    mine = [r for r in rows if r.org_id == caller.org_id]  # type: ignore[attr-defined]
    if len(mine) == 1:
        return mine[0]
    if len(rows) == 1:
        return rows[0]
    if len(rows) > 1:
        raise Conflict(f"more than one {kind} is named {ref!r}; use its id", field)
    raise NotFound(kind, ref, field)


def unique_name(session: Session, model: type[Any], name: str, kind: str, org_id: str | None = None,
                **scope: Any) -> None:
    """Refuse a name already taken (within ``org_id`` and ``scope`` when given)."""
    query = select(model.id).where(model.name == name)
    if org_id is not None:
        query = query.where(model.org_id == org_id)
    for column, value in scope.items():
        query = query.where(getattr(model, column) == value)
    if session.execute(query.limit(1)).first() is not None:
        raise Conflict(f"a {kind} named {name!r} exists already", "name")


def find_zone(session: Session, ref: str, field: str | None = "zone") -> Zone:
    """Zones are the cloud's, not an organization's: every caller may name any of them."""
    zone = session.get(Zone, ref) or session.execute(select(Zone).where(Zone.name == ref)).scalar_one_or_none()
    if zone is None:
        raise NotFound("zone", ref, field)
    return zone


def find_org(session: Session, caller: Caller, ref: str, field: str | None = None) -> Organization:
    """An organization by id or name: any for admins, only their own for everyone else."""
    org = session.get(Organization, ref) or session.execute(
        select(Organization).where(Organization.name == ref)).scalar_one_or_none()
    if org is None or (not caller.is_admin and org.id != caller.org_id):
        raise NotFound("organization", ref, field)
    return org
