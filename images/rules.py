"""Compatibility rules checked before any build (pure).

Every rule has a name; a violation raises ``BuildError`` with one line naming the rule, the variant,
the bad value and the fix. The tables hold published facts (mmdet's ``mmcv_minimum_version`` /
``mmcv_maximum_version`` checks, PyTorch's wheel indexes, OpenMMLab's prebuilt mmcv wheels, nvcc's
supported architectures); extend them when the matrix moves on.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from errors import BuildError
from images.matrix import CPU, PREBUILT, SOURCE, TORCH_PYPI_CUDA, ImageSpec
from images.mmcvbuild import NVCC_WHEELS

# mmdet/__init__.py asserts these ranges at import time.
MMDET_REQUIRES = {
    "3.0.0": {"mmcv": ">=2.0.0rc4,<2.1.0", "mmengine": ">=0.7.1,<1.0.0"},
    "3.1.0": {"mmcv": ">=2.0.0rc4,<2.1.0", "mmengine": ">=0.7.1,<1.0.0"},
    "3.2.0": {"mmcv": ">=2.0.0rc4,<2.2.0", "mmengine": ">=0.7.1,<1.0.0"},
    "3.3.0": {"mmcv": ">=2.0.0rc4,<2.2.0", "mmengine": ">=0.7.1,<1.0.0"},
}
# mmcv's requirements/runtime.txt.
MMCV_REQUIRES_MMENGINE = {"2.0.1": ">=0.3.0", "2.1.0": ">=0.3.0", "2.2.0": ">=0.3.0"}
# CUDA builds on download.pytorch.org/whl/cuXXX per torch minor version (CPU builds exist for all).
TORCH_CUDA = {
    "2.0": ("11.7", "11.8"),
    "2.1": ("11.8", "12.1"),
    "2.2": ("11.8", "12.1"),
    "2.3": ("11.8", "12.1"),
    "2.4": ("11.8", "12.1", "12.4"),
    "2.5": ("11.8", "12.1", "12.4"),
    "2.6": ("11.8", "12.4", "12.6"),
    "2.7": ("11.8", "12.6", "12.8"),
    "2.8": ("12.6", "12.8", "12.9"),
    "2.9": ("12.6", "12.8", "13.0"),
    # Seen on this project's machines (not a full table): torch 2.11.0+cu130 on the GPU machine,
    # PyPI's torch 2.14.1 is the cu130 build.
    "2.11": ("13.0",),
    "2.14": ("13.0",),
}
# Oldest NVIDIA Linux driver per CUDA major (minor-version compatibility; CUDA 13 user space needs
# the 580 series). The README's variant table shows it per variant.
DRIVER_MIN = {"11": "450.80.02", "12": "525.60.13", "13": "580"}
# OpenMMLab's prebuilt wheels: mmcv -> torch minor -> CUDA tags, and the CPython tags they cover.
MMCV_PREBUILT = {
    "2.1.0": {"2.0": ("cu117", "cu118", "cpu"), "2.1": ("cu118", "cu121", "cpu")},
}
MMCV_PREBUILT_PYTHON = {"2.1.0": ("3.8", "3.9", "3.10", "3.11")}
# Compute capability -> (first CUDA whose nvcc compiles it, first CUDA that dropped it).
ARCH_CUDA = {
    "3.5": ("7.0", "12.0"),
    "3.7": ("7.0", "12.0"),
    "5.0": ("7.0", "13.0"),
    "5.2": ("7.0", "13.0"),
    "6.0": ("8.0", "13.0"),
    "6.1": ("8.0", "13.0"),
    "7.0": ("9.0", "13.0"),
    "7.2": ("10.0", "13.0"),  # CUDA 13.0 dropped Maxwell, Pascal and Volta
    "7.5": ("10.0", None),
    "8.0": ("11.0", None),
    "8.6": ("11.1", None),
    "8.7": ("11.4", None),
    "8.9": ("11.8", None),
    "9.0": ("11.8", None),
    "10.0": ("12.8", None),
    "10.1": ("12.8", "13.0"),  # Thor: renamed 11.0 in CUDA 13.0
    "10.3": ("12.9", None),
    "11.0": ("13.0", None),
    "12.0": ("12.8", None),
    "12.1": ("12.9", None),
}
H100_ARCH = "9.0"
LOCAL_PREFIX = "localhost/"  # made here (debootstrap), never pulled: nothing to pin
NVIDIA_CUDA = "nvidia/cuda:"
DIGEST_RE = re.compile(r"@sha256:[0-9a-f]{64}$")


def check_spec(spec: ImageSpec) -> None:
    """Run every rule on one variant; the first violation raises BuildError."""
    for name, rule in RULES.items():
        problem = rule(spec)
        if problem:
            raise BuildError(
                f"compatibility rule '{name}' failed for variant '{spec.key}': {problem} "
                "(fix images/matrix.yaml)"
            )


def check_all(specs: list[ImageSpec]) -> None:
    """Check every variant before anything is built."""
    for spec in specs:
        check_spec(spec)


def parse_arch_list(arch_list: str) -> list[str]:
    """``"8.0 9.0+PTX"`` or ``"8.0;9.0"`` -> ``["8.0", "9.0"]``."""
    return [a.removesuffix("+PTX") for a in re.split(r"[;\s]+", arch_list.strip()) if a]


def min_driver(cuda: str) -> str:
    """The oldest NVIDIA driver a CUDA variant runs on (``"580"`` for 13.0); ``"–"`` for cpu."""
    if cuda == CPU:
        return "–"
    return DRIVER_MIN.get(cuda.split(".")[0], "?")


def _within(value: str, spec: str) -> bool:
    return SpecifierSet(spec, prereleases=True).contains(Version(value), prereleases=True)


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _mmdet_mmcv(spec: ImageSpec) -> str | None:
    needs = MMDET_REQUIRES.get(spec.mmdet)
    if needs is None:
        return f"mmdet {spec.mmdet} is not in the table; known: {', '.join(MMDET_REQUIRES)}"
    if not _within(spec.mmcv, needs["mmcv"]):
        return f"mmdet {spec.mmdet} needs mmcv{needs['mmcv']}, got mmcv {spec.mmcv}"
    return None


def _mmdet_mmengine(spec: ImageSpec) -> str | None:
    needs = MMDET_REQUIRES.get(spec.mmdet, {}).get("mmengine")
    if needs and not _within(spec.mmengine, needs):
        return f"mmdet {spec.mmdet} needs mmengine{needs}, got mmengine {spec.mmengine}"
    return None


def _mmcv_mmengine(spec: ImageSpec) -> str | None:
    needs = MMCV_REQUIRES_MMENGINE.get(spec.mmcv)
    if needs is None:
        return f"mmcv {spec.mmcv} is not in the table; known: {', '.join(MMCV_REQUIRES_MMENGINE)}"
    if not _within(spec.mmengine, needs):
        return f"mmcv {spec.mmcv} needs mmengine{needs}, got mmengine {spec.mmengine}"
    return None


def _torch_cuda(spec: ImageSpec) -> str | None:
    if spec.cuda == CPU:
        return None
    cudas = TORCH_CUDA.get(_minor(spec.torch))
    if cudas is None:
        return f"torch {spec.torch} has no CUDA table entry; known: {', '.join(TORCH_CUDA)}"
    if spec.cuda not in cudas:
        return f"torch {spec.torch} has CUDA builds for {', '.join(cudas)}, not CUDA {spec.cuda}"
    return None


def _torch_index(spec: ImageSpec) -> str | None:
    if spec.torch_from_pypi:
        pypi_cuda = TORCH_PYPI_CUDA.get(_minor(spec.torch))
        if spec.cuda == CPU and pypi_cuda:
            return None  # PyPI's CUDA torch, run on CPU
        if spec.cuda != pypi_cuda:
            return (
                f"PyPI's torch {spec.torch} is not a CUDA {spec.cuda} build "
                f"({pypi_cuda or 'unknown'}); use https://download.pytorch.org/whl/{spec.cuda_tag}"
            )
        return None
    if spec.torch_index.rstrip("/").rsplit("/", 1)[-1] != spec.cuda_tag:
        return f"torch_index {spec.torch_index} must end in /{spec.cuda_tag} for cuda {spec.cuda}"
    return None


def _mmcv_prebuilt(spec: ImageSpec) -> str | None:
    if spec.mmcv_from != PREBUILT:
        return None
    pairs = MMCV_PREBUILT.get(spec.mmcv, {})
    tags = pairs.get(_minor(spec.torch), ())
    if spec.cuda_tag not in tags:
        have = "; ".join(f"torch{t}: {', '.join(c)}" for t, c in pairs.items()) or "none"
        return (
            f"OpenMMLab has no prebuilt mmcv {spec.mmcv} wheel for torch {spec.torch} + "
            f"{spec.cuda_tag} (prebuilt: {have}); set mmcv_from: {SOURCE}"
        )
    if spec.python not in MMCV_PREBUILT_PYTHON.get(spec.mmcv, ()):
        return (
            f"prebuilt mmcv {spec.mmcv} wheels have no Python {spec.python}; use mmcv_from: source"
        )
    return None


def _arch_cuda(spec: ImageSpec) -> str | None:
    arches = parse_arch_list(spec.torch_cuda_arch_list)
    if spec.cuda == CPU:
        if arches:
            return (
                f"a cpu variant compiles no CUDA code; set torch_cuda_arch_list: '' (not {arches})"
            )
        return None
    if not arches:
        return "torch_cuda_arch_list is empty; list the GPUs to compile for, e.g. '8.0 9.0'"
    cuda = Version(spec.cuda)
    for arch in arches:
        if arch not in ARCH_CUDA:
            return f"unknown CUDA arch {arch!r}; known: {', '.join(ARCH_CUDA)}"
        first, dropped = ARCH_CUDA[arch]
        if cuda < Version(first) or (dropped and cuda >= Version(dropped)):
            span = f">={first}" + (f",<{dropped}" if dropped else "")
            return f"CUDA {spec.cuda} cannot compile arch {arch} (needs CUDA{span})"
    return None


def _arch_h100(spec: ImageSpec) -> str | None:
    if spec.cuda == CPU or Version(spec.cuda) < Version(ARCH_CUDA[H100_ARCH][0]):
        return None
    if H100_ARCH not in parse_arch_list(spec.torch_cuda_arch_list):
        return f"CUDA {spec.cuda} can compile for H100; add {H100_ARCH} to torch_cuda_arch_list"
    return None


def _base_digest(spec: ImageSpec) -> str | None:
    if spec.cuda == CPU:
        return None
    for field in ("base_image", "builder_image"):
        ref = getattr(spec, field)
        if not ref.startswith(LOCAL_PREFIX) and not DIGEST_RE.search(ref):
            return f"{field} {ref} is not pinned; append @sha256:<digest> of the tag"
    return None


def _builder_nvcc(spec: ImageSpec) -> str | None:
    if spec.cuda == CPU or spec.mmcv_from != SOURCE:
        return None
    if NVIDIA_CUDA in spec.builder_image:
        if "devel" not in spec.builder_image:
            return f"builder_image {spec.builder_image} has no nvcc; use a CUDA *-devel-* image"
        return None
    if spec.cuda not in NVCC_WHEELS:  # a plain base: nvcc comes from NVIDIA's PyPI wheel
        return (
            f"no known nvcc wheel for CUDA {spec.cuda} (known: {', '.join(NVCC_WHEELS)}); "
            "use an nvidia/cuda *-devel-* builder_image"
        )
    return None


RULES: dict[str, Callable[[ImageSpec], str | None]] = {
    "mmdet-mmcv": _mmdet_mmcv,
    "mmdet-mmengine": _mmdet_mmengine,
    "mmcv-mmengine": _mmcv_mmengine,
    "torch-cuda": _torch_cuda,
    "torch-index": _torch_index,
    "mmcv-prebuilt": _mmcv_prebuilt,
    "arch-cuda": _arch_cuda,
    "arch-h100": _arch_h100,
    "base-digest": _base_digest,
    "builder-nvcc": _builder_nvcc,
}
