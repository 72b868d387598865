"""The NoCloud seed: an ISO 9660 image labelled ``cidata`` that cloud-init reads at first boot.

Built in memory with pycdlib (no genisoimage to run): ``meta-data`` (instance id, hostname,
SSH keys), ``user-data`` (the user's own, verbatim, or a ``#cloud-config`` installing the
keys) and ``network-config`` (version 2: DHCP on every NIC, matched by MAC address, so the
guest's own interface names do not matter).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import pycdlib
import yaml

from service.files import write_atomic

__all__ = ["VOLUME_LABEL", "build", "hostname", "write"]

#: the label cloud-init's NoCloud datasource looks for
VOLUME_LABEL = "cidata"


def hostname(name: str) -> str:
    """The guest's hostname for an instance name: names may hold '_', which hostnames may not."""
    return name.replace("_", "-").rstrip(".-")


def build(instance_id: str, name: str, ssh_keys: Sequence[str], user_data: str, macs: Sequence[str]) -> bytes:
    """The seed ISO's bytes.  ``user_data`` empty means the default ``#cloud-config``."""
    meta = {"instance-id": instance_id, "local-hostname": hostname(name), "public-keys": list(ssh_keys)}
    # The keys also travel in meta-data, so a user's own user-data still gets them installed.
    user = user_data or "#cloud-config\n" + _yaml({"ssh_authorized_keys": list(ssh_keys)})
    network = {"version": 2, "ethernets": {f"nic{index}": {"match": {"macaddress": mac}, "dhcp4": True}
                                           for index, mac in enumerate(macs)}}
    files = {"meta-data": _yaml(meta), "user-data": user, "network-config": _yaml(network)}

    iso = pycdlib.PyCdlib()
    # Rock Ridge and Joliet carry the real names; ISO 9660 level 1 only allows 8.3 upper case.
    iso.new(interchange_level=1, vol_ident=VOLUME_LABEL, joliet=3, rock_ridge="1.09")
    for index, (file_name, text) in enumerate(files.items()):
        data = text.encode()
        iso.add_fp(io.BytesIO(data), len(data), f"/FILE{index}.;1", rr_name=file_name, joliet_path=f"/{file_name}")
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()


def write(path: Path, data: bytes) -> None:
    """Write the seed to ``path`` atomically: a domain never boots from half an ISO."""
    write_atomic(path, data)


def _yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=False, sort_keys=False)
