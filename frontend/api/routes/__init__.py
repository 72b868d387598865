"""One module per resource; ``ALL`` is what the app mounts under ``/v1``.

``enrolments`` comes before ``hypervisors``: ``/v1/hypervisors/enrolments`` must not be taken
for a hypervisor's name."""

from fastapi import APIRouter

from . import (audit, enrolments, events, flavors, frontends, hypervisors, images, instances, keypairs, orgs,
               server_groups, snapshots, tasks, tokens, tree, users, volumes, zones)
from . import floating_ips, liveconsole, networks, ports, routers, security_groups, subnets

ALL: list[APIRouter] = [
    networks.router, subnets.router, ports.router, routers.router, floating_ips.router, security_groups.router,
    tokens.router, orgs.router, users.router, zones.router, enrolments.router, hypervisors.router, flavors.router,
    instances.router, liveconsole.router, volumes.router, snapshots.router, tasks.router, events.router, tree.router,
    images.router, keypairs.router, server_groups.router, audit.router, frontends.router,
]
