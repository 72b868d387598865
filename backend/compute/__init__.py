"""The compute driver: instances and volumes on libvirt, answering the ops of ``docs/ops.md``.

Listed in a backend's ``ops_modules`` as ``backend.compute``; configured by its ``compute:``
section.  The modules, each with one job:

- ``spec``: the schemas of the ops' bodies, and the typed spec of a launch;  ``ops``: the op handlers;
- ``driver``: the ops' semantics (idempotent, all or nothing);
- ``hypervisor``: the only module that calls libvirt;  ``domainevents``: listening to it (a guest
  that crashes or stops by itself is told to the frontend at once, as an ``instance.power`` notice);
- ``liveconsole``: live serial consoles, their output sent up as notices;
- ``domain``, ``storagexml``: the XML libvirt is given;  ``seed``: the cloud-init NoCloud ISO;
- ``imagecache``: image files fetched once per host;  ``eviction``: when they go, and what keeps them;
- ``kvm``: kvm or qemu domains;
- ``exceptions``: the errors, and the mapping of libvirt's error codes to them.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import structlog

from service.config import BackendConfig, ConfigError

from ..registry import OpRegistry
from . import kvm
from .domainevents import DomainChange, DomainEvents
from .driver import POWER_NOTICE, ComputeDriver, DriverSettings, power_notice
from .hypervisor import Hypervisor
from .eviction import Sweeper
from .imagecache import CacheLimits, ImageCache
from .liveconsole import LiveConsoles
from .ops import ops

__all__ = ["register"]

log = structlog.get_logger("backend.compute")


def register(registry: OpRegistry, config: BackendConfig) -> None:
    section = config.compute
    data_dir = Path(config.data_dir)
    # The connection opens at the first op: a backend started before libvirtd still comes up,
    # and its ops say what is wrong until libvirtd answers.
    hypervisor = Hypervisor(section.uri, Path(section.pool_dir) if section.pool_dir else data_dir / "pool",
                            config.node_id)
    settings = DriverSettings(
        instances_dir=Path(section.instances_dir) if section.instances_dir else data_dir / "instances",
        domain_type=kvm.resolve(section.domain_type), cmdline=section.cmdline,
        stop_timeout_s=section.stop_timeout_s)
    limits = CacheLimits(max_age_s=section.image_cache_max_age_days * 86400,
                         max_bytes=int(section.image_cache_max_gb * 1e9))
    images = ImageCache(data_dir / "images", verify=_frontend_trust(section.frontend_ca_file), limits=limits)
    sweeper = Sweeper(images, hypervisor.pool_dir, hypervisor.files_in_use)
    images.on_download = sweeper.wake
    driver = ComputeDriver(hypervisor, images, settings)
    consoles = LiveConsoles(driver.open_console, registry.notify)
    for op in ops(driver, consoles):
        registry.register(op)
    sweeper.start()
    registry.on_close(sweeper.stop)
    registry.on_close(images.close)
    registry.on_close(hypervisor.close)
    registry.on_close(consoles.stop)

    def changed(change: DomainChange) -> None:
        registry.notify(POWER_NOTICE, power_notice(change))

    events = DomainEvents(hypervisor, changed)
    events.start()
    registry.on_close(events.stop)
    log.info("compute_driver_registered", uri=section.uri, domain_type=settings.domain_type,
             pool_dir=str(hypervisor.pool_dir), instances_dir=str(settings.instances_dir),
             image_cache_max_age_s=limits.max_age_s, image_cache_max_bytes=limits.max_bytes)


def _frontend_trust(ca_file: str) -> ssl.SSLContext | bool:
    """What image downloads check the frontend's certificate against; a bad file stops the backend at start."""
    if not ca_file:
        return True
    try:
        return ssl.create_default_context(cafile=ca_file)
    except OSError as exc:  # ssl.SSLError too: not a PEM certificate
        raise ConfigError(f"compute.frontend_ca_file: cannot use {ca_file}: {exc.strerror or exc}") from None
