"""The network driver: tenant networks on a hypervisor, answering the ops of ``docs/ops.md``.

Listed in a backend's ``ops_modules`` as ``backend.network``; configured by its ``network:``
section (``docs/network.md`` draws the data path).  The modules, each with one job:

- ``spec``: the schema of ``net.sync``'s body and the typed desired state;  ``ops``: the handlers;
- ``driver``: converging the host on a desired state (idempotent, reversible);
- ``netlink``: the only module that talks to the kernel (pyroute2);  ``names``: device names;
- ``dhcp``: one dnsmasq per subnet with DHCP;  ``exceptions``: the errors and errno mapping.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from service.config import BackendConfig

from ..registry import OpRegistry
from .driver import NetworkDriver, NetworkSettings
from .ops import ops

__all__ = ["register"]

log = structlog.get_logger("backend.network")


def register(registry: OpRegistry, config: BackendConfig) -> None:
    section = config.network
    settings = NetworkSettings(
        host=config.node_id, vtep=section.vtep, underlay_mtu=section.underlay_mtu, vxlan_port=section.vxlan_port,
        namespace_prefix=section.namespace_prefix, tap_netns=section.tap_netns or None,
        external_interface=section.external_interface or None, transit_cidr=section.transit_cidr,
        state_dir=Path(section.state_dir) if section.state_dir else Path(config.data_dir) / "network")
    driver = NetworkDriver(settings)
    for op in ops(driver):
        registry.register(op)
    driver.start_watching()
    registry.on_close(driver.close)
    log.info("network_driver_registered", vtep=settings.vtep, mtu=settings.mtu, prefix=settings.namespace_prefix)
