"""The NoCloud seed ISO, read back with pycdlib as cloud-init would see it."""

from __future__ import annotations

import io
from pathlib import Path

import pycdlib
import pytest
import yaml

from backend.compute import seed

INSTANCE = "6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f"
KEYS = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBadKey alice@example", "ssh-rsa AAAAB3NzaC1yc2E bob@example"]
MACS = ["52:54:00:12:34:56", "52:54:00:ab:cd:ef"]


def read_iso(data: bytes) -> tuple[str, dict[str, str]]:
    """The volume label, and each file by its Rock Ridge name (the same under Joliet)."""
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    try:
        label = iso.pvd.volume_identifier.decode().strip()
        files = {}
        for name in ("meta-data", "user-data", "network-config"):
            for facade, path in ((iso.get_rock_ridge_facade(), f"/{name}"), (iso.get_joliet_facade(), f"/{name}")):
                out = io.BytesIO()
                facade.get_file_from_iso_fp(out, path)
                files.setdefault(name, out.getvalue().decode())
                assert files[name] == out.getvalue().decode()
        return label, files
    finally:
        iso.close()


def test_default_seed() -> None:
    label, files = read_iso(seed.build(INSTANCE, "web_1", KEYS, "", MACS))
    assert label == "cidata"
    assert yaml.safe_load(files["meta-data"]) == {
        "instance-id": INSTANCE, "local-hostname": "web-1", "public-keys": KEYS}
    assert files["user-data"].startswith("#cloud-config\n")
    assert yaml.safe_load(files["user-data"]) == {"ssh_authorized_keys": KEYS}
    assert yaml.safe_load(files["network-config"]) == {"version": 2, "ethernets": {
        "nic0": {"match": {"macaddress": MACS[0]}, "dhcp4": True},
        "nic1": {"match": {"macaddress": MACS[1]}, "dhcp4": True}}}


def test_user_data_is_verbatim_and_keys_still_travel_in_meta_data() -> None:
    user_data = "#!/bin/sh\necho 'héllo: {not yaml' > /tmp/x\n"
    _, files = read_iso(seed.build(INSTANCE, "db", KEYS[:1], user_data, []))
    assert files["user-data"] == user_data
    assert yaml.safe_load(files["meta-data"])["public-keys"] == KEYS[:1]
    assert yaml.safe_load(files["network-config"]) == {"version": 2, "ethernets": {}}


@pytest.mark.parametrize(("name", "host"), [("web_1", "web-1"), ("db.internal", "db.internal"), ("a-", "a"),
                                            ("x_.", "x")])
def test_hostname(name: str, host: str) -> None:
    assert seed.hostname(name) == host


def test_write_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "seed.iso"
    target.write_bytes(b"old")
    data = seed.build(INSTANCE, "web", [], "", [])
    seed.write(target, data)
    assert target.read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == ["seed.iso"]  # no temporary file left
