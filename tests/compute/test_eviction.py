"""Cached images no instance uses go by age and by the cache's size; those instances read, or a
launch pins, or a download is writing, never do.  Real files: qcow2 overlays made by qemu-img."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from backend.compute.eviction import Sweeper, backing_file, images_in_use
from backend.compute.exceptions import HypervisorError
from backend.compute.imagecache import CacheLimits, ImageCache

DAY = 86400.0
OLD = "1f0c4d3e-0000-4000-8000-000000000001"
OLDER = "2f0c4d3e-0000-4000-8000-000000000002"
OLDEST = "3f0c4d3e-0000-4000-8000-000000000003"


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[ImageCache]:
    c = ImageCache(tmp_path / "images")
    yield c
    c.close()


def cached(cache: ImageCache, image_id: str, size: int, unused_days: float) -> Path:
    """A cached file of ``size`` bytes, last used ``unused_days`` ago."""
    path = cache.path(image_id)
    path.write_bytes(b"\0" * size)
    when = time.time() - unused_days * DAY
    os.utime(path, (when, when))
    return path


def limit(cache: ImageCache, max_age_days: float = 0, max_bytes: int = 0) -> None:
    cache.limits = CacheLimits(max_age_s=max_age_days * DAY, max_bytes=max_bytes)


def test_no_limits_keep_everything(cache: ImageCache) -> None:
    cached(cache, OLDEST, 1000, unused_days=3650)
    assert cache.evict(set()) == []


def test_images_unused_for_longer_than_the_age_limit_go(cache: ImageCache) -> None:
    cached(cache, OLDEST, 10, unused_days=9)
    cached(cache, OLDER, 10, unused_days=8)
    cached(cache, OLD, 10, unused_days=1)
    limit(cache, max_age_days=7)
    assert cache.evict(set()) == [OLDEST, OLDER]
    assert [p.name for p in cache.root.iterdir()] == [OLD]


def test_beyond_the_size_limit_the_least_recently_used_go_but_never_one_in_use(cache: ImageCache) -> None:
    in_use = cached(cache, OLDEST, 400, unused_days=3)
    cached(cache, OLDER, 400, unused_days=2)
    cached(cache, OLD, 400, unused_days=1)
    limit(cache, max_bytes=1000)
    assert cache.evict({in_use}) == [OLDER]  # 1200 bytes: one must go, and the oldest is in use
    assert sorted(p.name for p in cache.root.iterdir()) == sorted([OLDEST, OLD])
    assert cache.evict({in_use}) == []  # 800 bytes now


def test_in_use_is_by_the_real_path(cache: ImageCache, tmp_path: Path) -> None:
    path = cached(cache, OLDEST, 10, unused_days=30)
    (tmp_path / "link").symlink_to(cache.root)
    limit(cache, max_age_days=1)
    assert cache.evict({tmp_path / "link" / OLDEST}) == []
    assert path.exists()


def test_a_pinned_image_stays_until_unpinned(cache: ImageCache) -> None:
    cached(cache, OLDEST, 10, unused_days=30)
    limit(cache, max_age_days=1)
    with cache.pinned([OLDEST]):
        with cache.pinned([OLDEST]):
            pass
        assert cache.evict(set()) == []  # still pinned once
    assert cache.evict(set()) == [OLDEST]


def test_an_image_launched_since_the_sweep_looked_stays(cache: ImageCache, monkeypatch: pytest.MonkeyPatch) -> None:
    """``in_use`` was read before a launch that found the image cached and built on it: the launch's
    use, which moved the file's mtime, keeps it."""
    path = cached(cache, OLDEST, 10, unused_days=30)
    limit(cache, max_age_days=1)
    realpath = os.path.realpath

    def launched_meanwhile(name: Any) -> str:  # evict's last look at a file before it takes it
        os.utime(path)
        return realpath(name)

    monkeypatch.setattr(os.path, "realpath", launched_meanwhile)
    assert cache.evict(set()) == []
    monkeypatch.undo()
    assert path.exists()


def test_a_download_under_way_is_neither_counted_nor_touched(cache: ImageCache) -> None:
    part = cache.root / f".{OLD}.x1y2.part"
    part.write_bytes(b"\0" * 5000)
    os.utime(part, (0, 0))
    cached(cache, OLDEST, 10, unused_days=0)
    limit(cache, max_age_days=1, max_bytes=1000)
    assert cache.evict(set()) == []
    assert part.exists()


needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img (qemu-utils) is not installed")


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


@needs_qemu_img
def test_overlays_name_their_backing_file(cache: ImageCache, tmp_path: Path) -> None:
    base = cache.path(OLDEST)
    qemu_img("create", "-q", "-f", "qcow2", str(base), "1M")
    pool = tmp_path / "pool"
    pool.mkdir()
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(pool / "inst-a.qcow2"))
    qemu_img("create", "-q", "-f", "qcow2", str(pool / "vol-b.qcow2"), "1M")  # no backing file
    (pool / "raw.img").write_bytes(b"\0" * 512)
    assert backing_file(pool / "inst-a.qcow2") == base.resolve()
    assert backing_file(pool / "vol-b.qcow2") is None
    assert backing_file(pool / "raw.img") is None
    assert backing_file(pool / "gone.qcow2") is None
    assert images_in_use(pool, {Path("/boot/kernel")}) == {base.resolve(), Path("/boot/kernel")}
    assert images_in_use(tmp_path / "no-pool-yet", set()) == set()


@needs_qemu_img
def test_a_sweep_keeps_what_overlays_and_domains_read(cache: ImageCache, tmp_path: Path) -> None:
    """An instance's root image (under its overlay) and its kernel (named by its domain) stay; the rest goes."""
    root_image = cache.path(OLDEST)
    qemu_img("create", "-q", "-f", "qcow2", str(root_image), "1M")
    pool = tmp_path / "pool"
    pool.mkdir()
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(root_image), "-F", "qcow2", str(pool / "inst-a.qcow2"))
    os.utime(root_image, (0, 0))  # long unused, but under an instance's overlay
    kernel = cached(cache, OLDER, 10, unused_days=30)
    cached(cache, OLD, 10, unused_days=30)
    limit(cache, max_age_days=7)
    domain_files = {kernel}
    sweeper = Sweeper(cache, pool, lambda: domain_files)
    assert sweeper.sweep() == [OLD]
    # While the domains cannot be listed, nothing goes: a kernel might be taken from under one.
    domain_files.clear()

    def libvirt_down() -> set[Path]:
        raise HypervisorError("connect to libvirt at qemu:///system: no answer")

    assert Sweeper(cache, pool, libvirt_down).sweep() == []
    assert sweeper.sweep() == [OLDER]
    assert [p.name for p in cache.root.iterdir()] == [OLDEST]


def test_the_sweeper_sweeps_when_woken(cache: ImageCache, tmp_path: Path) -> None:
    limit(cache, max_age_days=1)
    sweeper = Sweeper(cache, tmp_path / "pool", set, interval_s=3600)
    sweeper.start()
    try:
        path = cached(cache, OLDEST, 10, unused_days=30)
        sweeper.wake()
        deadline = time.monotonic() + 5
        while path.exists():
            assert time.monotonic() < deadline, "the woken sweeper did not sweep"
            time.sleep(0.02)
    finally:
        sweeper.stop()
