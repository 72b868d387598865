"""Storage pool and volume XML for libvirt, built with ElementTree (values never shape the document)."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree as ET

from .domain import DiskFormat

__all__ = ["pool_path", "pool_xml", "volume_xml"]


def pool_xml(name: str, path: Path) -> str:
    """A directory pool: each volume is a file in ``path``."""
    root = ET.Element("pool", type="dir")
    ET.SubElement(root, "name").text = name
    target = ET.SubElement(root, "target")
    ET.SubElement(target, "path").text = str(path)
    return ET.tostring(root, encoding="unicode")


def pool_path(xml: str) -> Path | None:
    path = ET.fromstring(xml).findtext("target/path")
    return Path(path) if path else None


def volume_xml(name: str, capacity_bytes: int, fmt: DiskFormat, backing: tuple[Path, DiskFormat] | None = None) -> str:
    """A volume of ``capacity_bytes``, allocated as it is written; with ``backing``, a copy-on-write
    overlay over that file (which libvirt and QEMU only ever read)."""
    root = ET.Element("volume")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "capacity", unit="bytes").text = str(capacity_bytes)
    ET.SubElement(root, "allocation", unit="bytes").text = "0"
    target = ET.SubElement(root, "target")
    ET.SubElement(target, "format", type=fmt)
    if backing is not None:
        store = ET.SubElement(root, "backingStore")
        ET.SubElement(store, "path").text = str(backing[0])
        ET.SubElement(store, "format", type=backing[1])
    return ET.tostring(root, encoding="unicode")
