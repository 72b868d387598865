"""libvirt error codes map to the compute errors in one total function."""

from __future__ import annotations

import libvirt
import pytest

from backend.compute.exceptions import (
    BadRequest,
    ComputeError,
    Conflict,
    HypervisorError,
    LibvirtCode,
    NoGuestAgent,
    NotFound,
    Unsupported,
    from_libvirt,
)
from backend.registry import OpError


@pytest.mark.parametrize("code", list(LibvirtCode), ids=lambda code: code.name)
def test_copied_codes_are_libvirts(code: LibvirtCode) -> None:
    assert getattr(libvirt, f"VIR_ERR_{code.name}") == code.value


@pytest.mark.parametrize(("code", "kind"), [
    (libvirt.VIR_ERR_NO_DOMAIN, NotFound), (libvirt.VIR_ERR_NO_STORAGE_VOL, NotFound),
    (libvirt.VIR_ERR_OPERATION_INVALID, Conflict), (libvirt.VIR_ERR_NO_SUPPORT, Unsupported),
    (libvirt.VIR_ERR_AGENT_UNRESPONSIVE, NoGuestAgent),
    (libvirt.VIR_ERR_INTERNAL_ERROR, HypervisorError), (libvirt.VIR_ERR_SYSTEM_ERROR, HypervisorError),
    (123456, HypervisorError),  # a code libvirt may add one day still maps
])
def test_every_code_maps(code: int, kind: type[ComputeError]) -> None:
    error = from_libvirt(code, "Domain not found", "start domain x")
    assert type(error) is kind
    assert str(error) == "start domain x: Domain not found"
    assert isinstance(error, OpError) and error.exit_status == 1


def test_bad_request_is_exit_64() -> None:
    assert BadRequest("no").exit_status == 64
