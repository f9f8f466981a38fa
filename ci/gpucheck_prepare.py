"""``ci/gpucheck.py prepare``: fill the carry folder with what the offline GPU machine lacks.

For each target Python (3.12 for the H200, 3.11 for the rehearsal here): resolve the project's pins
for that Python (``pip install --dry-run --report``), subtract the closure of what the machine
already has, and ``pip download --no-deps`` exactly those wheels. Then mmcv's sdist and the real COCO
sample (../shared/coco-tiny, read now; the carry folder is gitignored, never committed). Fails when
the folder would pass 64 MiB (the device tool's limit).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project (prepare runs here)
from gpucheck_carry import (
    BUILD_TOOLS,
    CARRY_LIMIT,
    MACHINE_HAS,
    MMCV,
    NOT_CARRIED,
    carry_size,
    project_requirements,
    requirement_name,
    wheels_dir,
)

from common import REPO_ROOT
from images.wheelhouse import manylinux_platforms, pip_download_argv

SHARED_COCO = REPO_ROOT.parent / "shared" / "coco-tiny"
# torch 2.11's own wheels need glibc >= 2.28: wheels up to manylinux_2_28 run wherever it does.
GPU_GLIBC = 28


def prepare(carry: Path, *, pythons: tuple[str, ...]) -> int:
    """Fill ``carry``; print what it holds and its size. Returns the exit code."""
    carry.mkdir(parents=True, exist_ok=True)
    for python in pythons:
        wheels = wheels_dir(carry, python)
        pins, fallback = _closure(python)
        _download(pins, python=python, dest=wheels)
        _download(fallback, python=python, dest=wheels / "fallback")
        (wheels / "requirements.txt").write_text("\n".join(pins) + "\n")
        print(f"[prepare] Python {python}: {len(pins)} wheels + {len(fallback)} fallbacks "
              f"({', '.join(fallback)}) in {wheels}")  # fmt: skip
    _sdist(carry)
    _coco(carry / "coco")
    size = carry_size(carry)
    manifest = {"bytes": size, "pythons": list(pythons), "coco": str(SHARED_COCO), "mmcv": MMCV}
    (carry / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(
        f"[prepare] carry folder {carry}: {size / 2**20:.1f} MiB (limit {CARRY_LIMIT // 2**20} MiB)"
    )
    if size > CARRY_LIMIT:
        print(f"[prepare] error: {carry} is over the limit; carry fewer wheels")
        return 1
    return 0


def _report(python: str, requirements: list[str]) -> dict[str, str]:
    """``{name: version}`` pip would install for ``python`` (wheels only, this machine's pins)."""
    with tempfile.TemporaryDirectory(prefix="gpucheck-") as tmp:
        report = Path(tmp) / "report.json"
        argv = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--dry-run",
            "--ignore-installed",
            "--report",
            str(report),
            "--target",
            str(Path(tmp) / "t"),
            "--python-version",
            python,
            "--only-binary=:all:",
            *manylinux_platforms(GPU_GLIBC),
            "-c",
            str(REPO_ROOT / "ci" / "constraints.txt"),
            *requirements,
        ]
        subprocess.run(argv, check=True, capture_output=True, text=True)
        items = json.loads(report.read_text())["install"]
    return {requirement_name(i["metadata"]["name"]): i["metadata"] for i in items}


def _closure(python: str) -> tuple[list[str], list[str]]:
    """(wheels the machine surely lacks, fallbacks): a fallback is a package of the machine's own
    closure that a carried package requires directly (jsonschema needs six, which python-dateutil
    4 no longer pulls in): installed there only when ``pip check`` says it is missing."""
    need = _report(python, project_requirements())
    has = _report(python, list(MACHINE_HAS[1:]))  # torch: the machine's own (2.11.0+cu130)
    # The build tools always travel: a machine's setuptools >= 82 has no pkg_resources for mmcv.
    skip = (set(has) | set(NOT_CARRIED) | set(MACHINE_HAS)) - {
        requirement_name(t) for t in BUILD_TOOLS
    }
    carried = {n: m for n, m in need.items() if n not in skip}
    wanted = {requirement_name(r.split(";")[0]) for m in carried.values() for r in m.get("requires_dist") or []
              if "extra ==" not in r}  # fmt: skip
    fallback = sorted(wanted & (set(has) - set(MACHINE_HAS)) & set(need))
    pin = lambda names: sorted(f"{n}=={need[n]['version']}" for n in names)  # noqa: E731
    return pin(carried), pin(fallback)


def _download(pins: list[str], *, python: str, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    platforms = manylinux_platforms(GPU_GLIBC)
    argv = pip_download_argv(
        "--no-deps", "--only-binary=:all:", "--python-version", python, *platforms, *pins, dest=dest
    )
    subprocess.run(argv, check=True)


def _sdist(carry: Path) -> None:
    if (carry / f"mmcv-{MMCV}.tar.gz").exists():
        return
    argv = pip_download_argv(
        "--no-deps", "--no-binary", ":all:", "--no-build-isolation", f"mmcv=={MMCV}", dest=carry
    )
    subprocess.run(argv, check=True)


def _coco(dest: Path) -> None:
    if not SHARED_COCO.is_dir():
        raise SystemExit(f"[prepare] error: {SHARED_COCO} not found; the check trains on real COCO")
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(SHARED_COCO, dest)
