"""Wheelhouse: ready wheels (torch, a compiled mmcv) handed to the build instead of downloads.

``--wheelhouse DIR`` uses the wheels in DIR; ``--wheelhouse auto`` looks where this project and
this machine keep them: ci/setup.sh's mmcv cache ($MMDET_DET_CACHE/wheels/<key>/, the same key),
$PIP_FIND_LINKS directories and /opt/wheels. Only wheels that fit the variant are used: torch
``<torch>+<cpu|cuXYZ>`` and mmcv ``<mmcv>`` for its CPython tag. Wheel digests are cached by
(path, size, mtime) so that an unchanged rebuild does not re-read hundreds of MB.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from common import atomic_dir, cache_root, file_sha256, write_atomic
from errors import ConfigError
from images import mmcvbuild
from images.matrix import ImageSpec

AUTO = "auto"
DEFAULT_FIND_LINKS = ("/opt/wheels",)
BOOKWORM_GLIBC = 36  # Debian bookworm's glibc 2.36


def manylinux_platforms(glibc_minor: int = BOOKWORM_GLIBC) -> list[str]:
    """``--platform`` args for every manylinux tag a glibc 2.<minor> system runs: pip takes each tag
    literally, and torch's CUDA closure mixes manylinux_2_28, _2_27, 2014, … wheels."""
    tags = [f"manylinux_2_{minor}_x86_64" for minor in range(glibc_minor, 4, -1)]
    tags += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    return [arg for tag in tags for arg in ("--platform", tag)]


def mmcv_cache_key(spec: ImageSpec) -> str:
    """The dir ci/setup.sh caches the mmcv wheel under (mmcv, torch, python tag, cuda, arches)."""
    return mmcvbuild.cache_key(
        mmcv=spec.mmcv,
        torch=spec.torch,
        python_tag=spec.python_tag,
        cuda=spec.torch_cuda,  # a cpu variant on PyPI's CUDA torch: the "…-cu130-cpuops" wheel
        arch_list=spec.torch_cuda_arch_list,
    )


def torch_dir(spec: ImageSpec) -> Path:
    """Where ``fetch_torch_wheels`` keeps torch + its CUDA wheels for a PyPI-torch variant."""
    return cache_root() / "wheels" / f"torch{spec.torch}-{spec.python_tag}-{spec.cuda_tag}"


def select_wheels(spec: ImageSpec, names: list[str]) -> list[str]:
    """The wheel file names (pure) that fit ``spec``: its exact torch build and its mmcv.

    PyPI's torch wheels carry no local label (``torch-2.14.1-cp311-…``): a PyPI variant takes them.
    """
    build = spec.torch_version.split("+")[1]  # cu130 for PyPI's torch, cpu variant included
    label = rf"(\+{build})?" if spec.torch_from_pypi else rf"\+{build}"
    torch_re = re.compile(
        rf"^torch-{re.escape(spec.torch)}{label}-{spec.python_tag}-[^-]+-[^-]+\.whl$"
    )
    mmcv_re = re.compile(rf"^mmcv-{re.escape(spec.mmcv)}-{spec.python_tag}-[^-]+-[^-]+\.whl$")
    chosen: list[str] = []
    for pattern in (torch_re, mmcv_re):
        match = sorted(name for name in names if pattern.match(name))
        chosen.extend(match[:1])
    return chosen


def find_wheels(spec: ImageSpec, wheelhouse: str | None) -> tuple[Path, ...]:
    """Resolve ``--wheelhouse`` (None, ``auto`` or a directory) to the wheels used for ``spec``."""
    if not wheelhouse:
        return ()
    if wheelhouse == AUTO:
        dirs = [
            cache_root() / "wheels" / mmcv_cache_key(spec),
            torch_dir(spec),
            *_find_links_dirs(),
        ]
    else:
        path = Path(wheelhouse).expanduser()
        if not path.is_dir():
            raise ConfigError(f"--wheelhouse {wheelhouse}: not a directory; pass a dir or 'auto'")
        dirs = [path]
    found: dict[str, Path] = {}
    for directory in dirs:
        if directory.is_dir():
            for wheel in sorted(directory.glob("*.whl")):
                found.setdefault(wheel.name, wheel)
    chosen = [found[name] for name in select_wheels(spec, list(found))]
    closure = torch_dir(spec)
    if wheelhouse == AUTO and any(p.parent == closure for p in chosen):  # torch's own deps too
        chosen += [p for p in sorted(closure.glob("*.whl")) if p not in chosen]
    return tuple(chosen)


def pip_download_argv(*args: str, dest: Path) -> list[str]:
    """``pip download -q … -d dest`` with this interpreter's pip (the image's torch, the GPU carry)."""
    return [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
            *args, "-d", str(dest)]  # fmt: skip


def fetch_torch_wheels(spec: ImageSpec, *, echo=print) -> Path:
    """``pip download`` torch and its CUDA wheels for the image's Python into ``torch_dir(spec)``.

    A CUDA torch is ~3 GB of wheels: fetched once (from PyPI, or this machine's local index),
    then every build of the variant gets them bind-mounted instead of downloading them again.
    """
    dest = torch_dir(spec)
    if any(dest.glob("torch-*.whl")):
        return dest
    echo(f"[build-image] fetching {spec.torch_pin} and its CUDA wheels into {dest}")
    with atomic_dir(dest) as tmp:
        argv = pip_download_argv(
            "--only-binary=:all:", "--python-version", spec.python, *manylinux_platforms(),
            spec.torch_pin, dest=tmp,
        )  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ConfigError(
                f"pip download {spec.torch_pin} for Python {spec.python} failed: {detail}"
            )
    return dest


def wheel_digests(wheels: tuple[Path, ...]) -> tuple[tuple[str, str], ...]:
    """``(path, sha256)`` per wheel, served from the stat-keyed digest cache when unchanged."""
    cache_file = cache_root() / "wheel-digests.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    out, changed = [], False
    for wheel in wheels:
        st = wheel.stat()
        key = f"{wheel.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        if key not in cache:
            cache[key] = file_sha256(wheel)
            changed = True
        out.append((str(wheel), cache[key]))
    if changed:
        write_atomic(cache_file, json.dumps(cache, indent=0, sort_keys=True))
    return tuple(out)


def _find_links_dirs() -> list[Path]:
    links = os.environ.get("PIP_FIND_LINKS", "").split()
    return [Path(p) for p in (*links, *DEFAULT_FIND_LINKS) if "://" not in p]
