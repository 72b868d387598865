"""``?all_orgs=true``: an admin's view of every organization's resources, in a list.

Every query is otherwise scoped to the caller's organization, admins' too: an operator looking
for who holds an address, what runs on a host or why tasks fail cloud-wide asks for it
explicitly, so that no admin tool shows other tenants' resources by accident.  Admins only
(anyone else is refused, naming the parameter), and each such view, allowed or refused, is
recorded in the audit log (``audit.py``), which otherwise records only changes.
"""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import Depends, Query, Request

from ..auth import Role
from ..errors import Forbidden
from .audit import audit_view
from .deps import CallerDep
from .refusals import refuses

__all__ = ["AllOrgsDep"]

log = structlog.get_logger("frontend.api")

PARAMETER = "all_orgs"


@refuses(403)
def _all_orgs(request: Request, caller: CallerDep,
              all_orgs: bool = Query(default=False, description="admins: every organization's, not only yours "
                                                                "(recorded in the audit log)")) -> bool:
    if not all_orgs:
        return False
    audit_view(request, f"{PARAMETER}=true")
    allowed = caller.is_admin
    log.info("cross_org_view", path=request.url.path, user=caller.user_name, org=caller.org_id, allowed=allowed)
    if not allowed:
        raise Forbidden(f"a view of every organization needs the {Role.admin.label} role; you are "
                        f"{caller.role.label}", PARAMETER)
    return True


#: true when an admin asked for every organization's resources
AllOrgsDep = Annotated[bool, Depends(_all_orgs)]

