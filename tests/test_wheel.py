"""The wheel as an operator installs it (docs/install.md): built from the source, installed into a
fresh venv, its console scripts run from outside the checkout, and it carries every file the
product reads at run time.

Offline, and leaving nothing in the checkout:

- The source is a copy of the checkout's files (tracked, and new ones not ignored) in tmp_path:
  setuptools writes build/ and *.egg-info beside the source it builds.
- ``python -m build --wheel --no-isolation``: an isolated build would download setuptools, so
  this venv's setuptools builds it (the ``test`` extra keeps it new enough for
  ``[build-system] requires``, which build checks).
- The fresh venv has no pip (``--without-pip`` skips ensurepip's seconds); this venv's pip
  drives it with ``--python``.  A .pth file in its site-packages names this venv's
  site-packages, where the dependencies are: it is appended after the venv's own, so the
  installed wheel wins, and a .pth line runs none of the .pth files in the directory it adds,
  so this venv's editable install (a finder mapping the packages to the checkout) stays out.
- ``pip install --no-index --no-deps`` the wheel, then ``pip check``, which sees the .pth's
  packages: it proves this venv meets the wheel's requirements.  Only its lines about
  cloudland count, since it also judges this venv's other packages, which are not the wheel's
  business.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from frontend.db.engine import MIGRATIONS

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
PACKAGES = {pattern.rstrip("*") for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
VERSION = PYPROJECT["project"]["version"]
TIMEOUT_S = 180

# Run in the fresh venv: where each package comes from, the frontend's migrations applied to a new
# database (as every start of the frontend does), and the web console's templates and static files
# found the ways the console finds them.
RUNTIME_CHECK = """
import importlib, importlib.metadata, importlib.resources, pathlib, sys
import jinja2
from frontend.db import Database, upgrade
venv = pathlib.Path(sys.prefix)
for name in sys.argv[2].split(","):
    where = pathlib.Path(importlib.import_module(name).__file__)
    assert where.is_relative_to(venv), f"{name} imported from {where}"
where = pathlib.Path(str(importlib.metadata.distribution("cloudland").locate_file("")))
assert where.is_relative_to(venv), f"cloudland's metadata read from {where}"
db = Database(f"sqlite:///{sys.argv[1]}")
upgrade(db)
print("revision", db.revision())
db.dispose()
print("templates", len(jinja2.PackageLoader("frontend.console", "templates").list_templates()))
print("static", len(list((importlib.resources.files("frontend.console") / "static").iterdir())))
"""


def _source_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True, timeout=60).stdout.decode()
    # A tracked file deleted in the working tree is not part of what is built.
    return sorted(path for path in listed.split("\0") if path and (REPO / path).is_file())


def _checkout_build_outputs() -> dict[str, float]:
    """What a build in the checkout itself would write or touch, with mtimes."""
    return {p.name: p.stat().st_mtime for p in [REPO / "build", *REPO.glob("*.egg-info")] if p.exists()}


def _run(argv: list[str | Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)


def _ok(argv: list[str | Path], cwd: Path) -> str:
    result = _run(argv, cwd)
    assert result.returncode == 0, f"{argv}: status {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.slow
def test_wheel_installs_runs_and_carries_its_files(tmp_path: Path) -> None:
    files = _source_files()
    source = tmp_path / "source"
    for path in files:
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / path, source / path)
    before = _checkout_build_outputs()
    dist = tmp_path / "dist"
    _ok([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", dist, source], tmp_path)
    assert _checkout_build_outputs() == before, "the build wrote into the checkout"
    [wheel] = dist.glob("*.whl")
    assert wheel.name == f"cloudland-{VERSION}-py3-none-any.whl"

    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    assert {name.split("/")[0] for name in shipped if ".dist-info/" not in name} == PACKAGES
    # Everything of the packages, not only their code: the console's templates and static files,
    # py.typed, the migrations and their template.
    missing = [path for path in files if path.split("/")[0] in PACKAGES and path not in shipped]
    assert not missing, f"the wheel lacks {missing}: see [tool.setuptools.package-data] in pyproject.toml"

    venv = tmp_path / "venv"
    _ok([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path)
    python = venv / "bin" / "python"
    site = Path(_ok([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path).strip())
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site / "cloudland-test-dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    pip: list[str | Path] = [sys.executable, "-m", "pip", "--python", python]
    _ok([*pip, "install", "--quiet", "--no-index", "--no-deps", wheel], tmp_path)
    check = _run([*pip, "check"], tmp_path)
    assert check.returncode == 0 or check.stdout.strip(), f"pip check did not run: {check.stderr}"
    about_us = [line for line in check.stdout.splitlines() if line.lower().startswith("cloudland ")]
    assert not about_us, "\n".join(about_us)

    bin_dir = venv / "bin"
    assert f"version {VERSION}" in _ok([bin_dir / "clctl", "--version"], tmp_path)
    clctl_help = _ok([bin_dir / "clctl", "--help"], tmp_path)
    assert "Drive a cloudland cloud through its REST API" in clctl_help and "hypervisor" in clctl_help
    for daemon in ("frontend", "agent", "backend"):
        usage = _ok([bin_dir / f"cloudland-{daemon}", "--help"], tmp_path)
        assert usage.startswith(f"Usage: cloudland-{daemon} ") and "--config" in usage, usage

    report = _ok([python, "-c", RUNTIME_CHECK, tmp_path / "state.db", ",".join(sorted(PACKAGES))], tmp_path)
    # structlog's default renderer prints the migration's log lines among the facts
    facts = dict(line.split(" ", 1) for line in report.splitlines() if line.startswith(("revision ", "templates ",
                                                                                          "static ")))
    assert facts["revision"] == ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert int(facts["templates"]) == len(list((REPO / "frontend/console/templates").glob("*.html")))
    assert int(facts["static"]) == len(list((REPO / "frontend/console/static").iterdir()))
