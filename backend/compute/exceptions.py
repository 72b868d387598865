"""The compute driver's errors, and the one place where libvirt's error codes become them.

Every error is an ``OpError``, so the registry answers it as an error result with the
message (which reaches the user in the task's per-host results) and the exit status::

    OpError (backend.registry)
    └── ComputeError          anything this host could not do (exit 1)
        ├── BadRequest        the op's body is malformed or asks the impossible (exit 64)
        ├── NotFound          no such instance, volume or disk on this host
        ├── Conflict          the host's state forbids it now (a volume in use, a name taken)
        ├── ImageError        an image file cannot be fetched or is not what the spec says
        ├── Unsupported       this libvirt driver cannot do it (test:///default lacks some calls)
        ├── NoGuestAgent      the guest agent did not answer (nothing in the guest was frozen)
        └── HypervisorError   libvirt or QEMU failed: connection, daemon, guest start
"""

from __future__ import annotations

import enum

from ..registry import OpError

__all__ = ["BadRequest", "ComputeError", "Conflict", "HypervisorError", "ImageError", "LibvirtCode", "NoGuestAgent",
           "NotFound", "Unsupported", "from_libvirt"]

EXIT_FAILED = 1
EXIT_BAD_REQUEST = 64


class ComputeError(OpError):
    def __init__(self, message: str, exit_status: int = EXIT_FAILED) -> None:
        super().__init__(message, exit_status)


class BadRequest(ComputeError):
    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_BAD_REQUEST)


class NotFound(ComputeError):
    pass


class Conflict(ComputeError):
    pass


class ImageError(ComputeError):
    pass


class Unsupported(ComputeError):
    pass


class NoGuestAgent(ComputeError):
    pass


class HypervisorError(ComputeError):
    pass


class LibvirtCode(enum.IntEnum):
    """The ``virErrorNumber`` values told apart below (libvirt's ABI: they never change).

    Copied rather than imported because only ``hypervisor.py`` may import libvirt; a test
    checks each against the binding's ``VIR_ERR_*`` constant.
    """

    NO_SUPPORT = 3
    NO_DOMAIN = 42
    NO_STORAGE_POOL = 49
    NO_STORAGE_VOL = 50
    OPERATION_INVALID = 55
    CONFIG_UNSUPPORTED = 67
    NO_DOMAIN_METADATA = 80
    OPERATION_UNSUPPORTED = 84
    STORAGE_VOL_EXIST = 90
    AGENT_UNRESPONSIVE = 86
    AGENT_UNSYNCED = 97
    DEVICE_MISSING = 99


_KINDS: dict[int, type[ComputeError]] = {
    LibvirtCode.NO_DOMAIN: NotFound,
    LibvirtCode.NO_STORAGE_POOL: NotFound,
    LibvirtCode.NO_STORAGE_VOL: NotFound,
    LibvirtCode.NO_DOMAIN_METADATA: NotFound,
    LibvirtCode.DEVICE_MISSING: NotFound,
    # "domain is already running", "domain is not running": the state moved under us
    LibvirtCode.OPERATION_INVALID: Conflict,
    LibvirtCode.STORAGE_VOL_EXIST: Conflict,
    LibvirtCode.NO_SUPPORT: Unsupported,
    LibvirtCode.OPERATION_UNSUPPORTED: Unsupported,
    LibvirtCode.CONFIG_UNSUPPORTED: Unsupported,
    # no agent in the guest, or one that does not answer in time
    LibvirtCode.AGENT_UNRESPONSIVE: NoGuestAgent,
    LibvirtCode.AGENT_UNSYNCED: NoGuestAgent,
}


def from_libvirt(code: int, message: str, what: str) -> ComputeError:
    """The error for a failed libvirt call doing ``what`` (every code maps: default HypervisorError).

    Use as ``raise from_libvirt(...) from exc`` so the libvirt error stays in the traceback.
    """
    return _KINDS.get(code, HypervisorError)(f"{what}: {message}")
