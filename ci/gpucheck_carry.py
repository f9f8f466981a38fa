"""What travels to the offline GPU machine in the carry folder (pure, stdlib only): the project's
pins minus what the machine has or builds itself, where each Python's wheels go, the size limit.
ci/gpucheck.py (the plan) and ci/gpucheck_prepare.py (the download) both read it; it imports
neither.
"""

from __future__ import annotations

import sys
from pathlib import Path

import tomllib

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project: common
from common import REPO_ROOT

CARRY_LIMIT = 64 * 2**20
MMCV = "2.1.0"
GPU_PYTHON = "3.12"
# What the lent GPU machine has (docs: DEVELOPERS.md); their dependency closures are not carried.
MACHINE_HAS = (
    "torch",
    "numpy",
    "opencv-python-headless",
    "matplotlib",
    "scipy",
    "tensorboard",
    "pytest",
)
NOT_CARRIED = (
    "mmcv",
    "opencv-python",
    "mmdet-determined",
)  # compiled there / headless there / the tree
# + cuobjdump: the compile ends by proving its arches, and the machine may have none.
BUILD_TOOLS = (
    "setuptools==80.9.0",
    "wheel==0.48.0",
    "ninja==1.13.2",
    "nvidia-cuda-cuobjdump==13.2.51",
)


def wheels_dir(carry: Path, python: str) -> Path:
    """The GPU machine's wheels travel in the carry folder; the rehearsal's stay beside it."""
    name = f"wheels-cp{python.replace('.', '')}"
    return carry / name if python == GPU_PYTHON else carry.parent / "gpu-rehearsal" / name


def project_requirements(pyproject: Path = REPO_ROOT / "pyproject.toml") -> list[str]:
    """The project's runtime pins minus what is compiled there (mmcv) or already there."""
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    skip = {*NOT_CARRIED, *MACHINE_HAS}
    return [d for d in deps if requirement_name(d) not in skip] + list(BUILD_TOOLS)


def requirement_name(requirement: str) -> str:
    """A requirement's project name, normalised (``Foo_Bar[x]==1`` -> ``foo-bar``)."""
    for sep in ("==", ">=", "<=", "~=", ">", "<", "["):
        requirement = requirement.split(sep)[0]
    return requirement.strip().lower().replace("_", "-")


def carry_size(carry: Path) -> int:
    """Bytes in the carry folder, work/ (built there) excluded."""
    return sum(
        p.stat().st_size
        for p in carry.rglob("*")
        if p.is_file() and "work" not in p.relative_to(carry).parts
    )
