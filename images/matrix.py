"""Load images/matrix.yaml into ImageSpecs (pure: no subprocess, no network).

``load_matrix`` reads and validates the file's shape; ``expand_matrix`` turns each variant into a
frozen ``ImageSpec`` with its readable tag and build args computed. Compatibility between versions
is checked separately by ``images.rules.check_spec``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from errors import ConfigError

IMAGES_DIR = Path(__file__).resolve().parent
MATRIX_PATH = IMAGES_DIR / "matrix.yaml"
IMAGE_NAME = "mmdet-determined"
CPU = "cpu"
PREBUILT = "prebuilt"
SOURCE = "source"
MMCV_FROM = (PREBUILT, SOURCE)
PYPI_INDEX = "https://pypi.org/simple"  # torch's default wheels (CUDA builds, no local label)
MMCV_INDEX = "https://download.openmmlab.com/mmcv/dist/{cuda_tag}/torch{torch_minor}/index.html"
REQUIRED = (
    "base_image",
    "builder_image",
    "python",
    "cuda",
    "torch",
    "torch_index",
    "mmcv",
    "mmcv_from",
    "mmdet",
    "mmengine",
    "determined",
    "torch_cuda_arch_list",
)
OPTIONAL = ("description", "max_jobs", "extra_packages", "verified")
PLANNED = "planned only (`--dry-run`)"
VERSION_RE = re.compile(r"^\d+\.\d+(\.\d+)?([a-z]+\d+)?$")
# The CUDA build PyPI's default Linux x86_64 torch wheel carries (torch_index: https://pypi.org/simple).
# A cpu variant may take it too: the CUDA build runs on CPU (its mmcv gets the CPU ops only); it is
# what a machine that reaches PyPI but not download.pytorch.org can install (seen 2026-12-06).
TORCH_PYPI_CUDA = {"2.9": "12.8", "2.13": "13.0", "2.14": "13.0"}


@dataclass(frozen=True)
class ImageSpec:
    """One fully resolved variant of the matrix."""

    key: str
    description: str
    base_image: str
    builder_image: str
    python: str
    cuda: str
    torch: str
    torch_index: str
    mmcv: str
    mmcv_from: str
    mmdet: str
    mmengine: str
    determined: str
    torch_cuda_arch_list: str
    max_jobs: int
    extra_packages: tuple[str, ...]
    verified: str = PLANNED  # prose for the README: what was built and checked, where

    @property
    def torch_from_pypi(self) -> bool:
        """torch's own PyPI wheels (``torch==2.14.1`` is the cu130 build), not a cuXYZ index."""
        return self.torch_index.rstrip("/") == PYPI_INDEX

    @property
    def cuda_tag(self) -> str:
        """``cu121`` for CUDA 12.1, ``cpu`` for the CPU variant."""
        return CPU if self.cuda == CPU else "cu" + self.cuda.replace(".", "")

    @property
    def torch_pin(self) -> str:
        """The exact torch requirement: ``torch==2.1.2+cu121``; PyPI's wheels have no local
        label, so there ``torch==2.14.1`` (whose ``torch.__version__`` is ``2.14.1+cu130``)."""
        if self.torch_from_pypi:
            return f"torch=={self.torch}"
        return f"torch=={self.torch}+{self.cuda_tag}"

    @property
    def torch_cuda(self) -> str:
        """The CUDA of the torch build installed: ``cuda``, except for a cpu variant on PyPI's
        torch (a CUDA build that runs on CPU; its mmcv has the CPU ops only)."""
        if self.cuda == CPU and self.torch_from_pypi:
            return TORCH_PYPI_CUDA.get(".".join(self.torch.split(".")[:2]), CPU)
        return self.cuda

    @property
    def torch_version(self) -> str:
        """What ``torch.__version__`` says inside the image (``2.14.1+cu130``)."""
        build = self.torch_cuda
        return f"{self.torch}+{CPU if build == CPU else 'cu' + build.replace('.', '')}"

    @property
    def python_tag(self) -> str:
        """The wheel tag of the interpreter (``cp311``)."""
        return "cp" + self.python.replace(".", "")

    @property
    def mmcv_index(self) -> str:
        """OpenMMLab's find-links page for this torch/CUDA pair (used when mmcv is prebuilt)."""
        minor = ".".join(self.torch.split(".")[:2])
        return MMCV_INDEX.format(cuda_tag=self.cuda_tag, torch_minor=minor)

    @property
    def readable_tag(self) -> str:
        """The human tag, e.g. ``mmdet3.3.0-mmcv2.1.0-torch2.1.2-cu121-py3.10``."""
        return (
            f"mmdet{self.mmdet}-mmcv{self.mmcv}-torch{self.torch}-{self.cuda_tag}-py{self.python}"
        )

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (the content hash is taken over it)."""
        data = asdict(self)
        data["extra_packages"] = list(self.extra_packages)
        return data


def load_matrix(path: Path = MATRIX_PATH) -> dict[str, dict[str, Any]]:
    """Read the matrix file; return ``{variant: merged settings}`` with defaults applied."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as err:
        raise ConfigError(f"image matrix {path} not found; restore images/matrix.yaml") from err
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", -1) + 1
        raise ConfigError(f"{path}:{line}: not valid YAML ({err.__class__.__name__})") from err
    if (
        not isinstance(raw, dict)
        or not isinstance(raw.get("variants"), dict)
        or not raw["variants"]
    ):
        raise ConfigError(f"{path}: needs a non-empty 'variants:' mapping")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"{path}: 'defaults' must be a mapping, got {type(defaults).__name__}")
    merged = {}
    for key, entry in raw["variants"].items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: variant {key!r} must be a mapping of settings")
        merged[str(key)] = {**defaults, **entry}
    return merged


def expand_matrix(
    variants: Mapping[str, Mapping[str, Any]], *, source: str = "images/matrix.yaml"
) -> list[ImageSpec]:
    """Validate each merged variant's fields and return one ImageSpec per variant, in file order."""
    return [_to_spec(key, dict(entry), source=source) for key, entry in variants.items()]


def select(specs: list[ImageSpec], names: list[str]) -> list[ImageSpec]:
    """The specs named (in the given order); raise listing the known variants for an unknown one."""
    by_key = {spec.key: spec for spec in specs}
    unknown = [name for name in names if name not in by_key]
    if unknown:
        raise ConfigError(
            f"unknown image variant {unknown[0]!r}; choose from: {', '.join(by_key)} (or --all)"
        )
    return [by_key[name] for name in names]


def _to_spec(key: str, entry: dict[str, Any], *, source: str) -> ImageSpec:
    where = f"{source} variant {key!r}"
    missing = [name for name in REQUIRED if entry.get(name) is None]
    if missing:
        raise ConfigError(f"{where}: missing field {missing[0]!r}; add it (or a default)")
    unknown = sorted(set(entry) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise ConfigError(
            f"{where}: unknown field {unknown[0]!r}; allowed: {', '.join(REQUIRED + OPTIONAL)}"
        )
    fields = {name: str(entry[name]).strip() for name in REQUIRED}
    for name in ("python", "torch", "mmcv", "mmdet", "mmengine", "determined"):
        if not VERSION_RE.match(fields[name]):
            raise ConfigError(f"{where}: {name} {fields[name]!r} is not a version like 2.1.0")
    if fields["cuda"] != CPU and not re.match(r"^\d+\.\d+$", fields["cuda"]):
        raise ConfigError(f"{where}: cuda {fields['cuda']!r} must be like 12.1 or 'cpu'")
    if fields["mmcv_from"] not in MMCV_FROM:
        raise ConfigError(
            f"{where}: mmcv_from {fields['mmcv_from']!r} unknown; allowed: {', '.join(MMCV_FROM)}"
        )
    extra = entry.get("extra_packages") or []
    if not isinstance(extra, list) or not all(isinstance(p, str) for p in extra):
        raise ConfigError(f"{where}: extra_packages must be a list of pip requirement strings")
    max_jobs = entry.get("max_jobs", 4)
    if not isinstance(max_jobs, int) or max_jobs < 1:
        raise ConfigError(f"{where}: max_jobs {max_jobs!r} must be a positive integer")
    return ImageSpec(
        key=key,
        description=str(entry.get("description", "")),
        verified=str(entry.get("verified") or PLANNED).strip(),
        max_jobs=max_jobs,
        extra_packages=tuple(extra),
        **fields,
    )
