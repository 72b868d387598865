"""One module per resource; ``ALL`` is what the app mounts under ``/v1``."""

from fastapi import APIRouter

from . import flavors, hypervisors, orgs, tokens, users, zones

ALL: list[APIRouter] = [
    tokens.router, orgs.router, users.router, zones.router, hypervisors.router, flavors.router,
]
