"""The experiment's ``data:`` section as a validated frozen dataclass, plus the paths it implies.

Cheap to import (no GCS, no mmengine): the trial imports it on every rank.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from errors import ConfigError
from staging.paths import GS, MANIFESTS_DIR, S3, parse_source, short_hash

SPLITS = ("train", "val")
BACKEND_NAME = "gs_cached"
BACKEND_NAMES = {GS: BACKEND_NAME, S3: "s3_cached"}  # read-through backend per store
DEFAULT_WORKERS = 16


@dataclass(frozen=True)
class DataSpec:
    """What to stage, from where, into which cache, and which COCO view the trial reads."""

    source: str
    cache: Path
    dest: Path
    splits: tuple[str, ...] = SPLITS
    with_images: bool = False
    subset: int | None = None
    seed: int = 0
    workers: int = DEFAULT_WORKERS
    verify: bool = False
    weights_mirror: str | None = None  # gs:// or s3://bucket/prefix, or a folder of checkpoints
    stage_weights: bool = False  # stage pretrained checkpoints (implied by weights_mirror)

    @classmethod
    def from_dict(cls, data: Any) -> DataSpec:
        """Validate a ``data:`` mapping; raise ConfigError naming the bad field (``data.xxx``)."""
        if not isinstance(data, dict):
            raise ConfigError(f"data must be a mapping with source/cache/dest, got {data!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"data.{unknown[0]} is not a known field; allowed: {', '.join(sorted(known))}"
            )
        for name in ("source", "cache", "dest"):
            if not data.get(name) or not isinstance(data[name], str | Path):
                raise ConfigError(
                    f"data.{name} is missing or empty; set it to a path (--{name} on the "
                    "command line)"
                )
        parse_source(str(data["source"]))
        mirror = data.get("weights_mirror")
        if mirror is not None:
            parse_source(mirror, field="data.weights_mirror")
        return cls(
            source=str(data["source"]),
            cache=Path(str(data["cache"])).expanduser().absolute(),
            dest=Path(str(data["dest"])).expanduser().absolute(),
            splits=_splits(data.get("splits", SPLITS)),
            with_images=_bool(data, "with_images", False),
            subset=_subset(data.get("subset")),
            seed=_int(data, "seed", 0, minimum=0),
            workers=_int(data, "workers", DEFAULT_WORKERS, minimum=1),
            verify=_bool(data, "verify", False),
            weights_mirror=None if mirror is None else str(mirror),
            stage_weights=_bool(data, "stage_weights", False),
        )

    @property
    def weights_enabled(self) -> bool:
        """True when pretrained checkpoints go through the node cache (staging/weights.py)."""
        return self.stage_weights or self.weights_mirror is not None

    @property
    def is_gs(self) -> bool:
        """True when the source is ``gs://…``."""
        return parse_source(self.source).kind == GS

    @property
    def is_remote(self) -> bool:
        """True when the source is an object store (``gs://…``, ``s3://…``)."""
        return parse_source(self.source).remote

    def ann_file(self, split: str) -> Path:
        """``<dest>/annotations/instances_<split>2017.json`` (the subset JSON if subset is set)."""
        _check_split(split)
        return self.dest / "annotations" / f"instances_{split}2017.json"

    def image_prefix(self, split: str) -> str:
        """Where the trial reads images: on disk under dest, or gs:// / s3:// through the cached
        backend."""
        _check_split(split)
        if self.is_remote and not self.with_images:
            return f"{parse_source(self.source).url}/{split}2017/"
        return f"{self.dest}/{split}2017/"

    def backend_args(self) -> dict[str, Any] | None:
        """``LoadImageFromFile(backend_args=...)``: None on disk, else our read-through backend
        for the store (``index``: the image listing staging pinned, so reads match the staged
        annotations)."""
        if self.is_remote and not self.with_images:
            name = BACKEND_NAMES[parse_source(self.source).kind]
            return {"backend": name, "cache": str(self.cache), "index": str(self.index())}
        return None

    def manifest(self) -> Path:
        """``<cache>/manifests/<key>.json``: every object this spec staged, with its crc32c."""
        return self.cache / MANIFESTS_DIR / f"{self._key()}.json"

    def index(self) -> Path:
        """``<cache>/manifests/<key>-images.json``: URL -> pinned version of every image that the
        read-through backend may read (written by staging; see staging/backend.py)."""
        return self.cache / MANIFESTS_DIR / f"{self._key()}-images.json"

    def _key(self) -> str:
        parts = (self.source, ",".join(self.splits), str(self.with_images), str(self.subset))
        return short_hash(*parts, str(self.seed))

    def to_dict(self) -> dict[str, Any]:
        """The spec as a plain ``data:`` mapping (round-trips through from_dict)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out.update(cache=str(self.cache), dest=str(self.dest), splits=list(self.splits))
        return out


def load_data_section(path: str) -> dict[str, Any] | None:
    """Read ``data:`` from an experiment YAML/JSON file, or a Determined ``trial.json``.

    ``path`` may be ``-`` for stdin. Returns None when the config has no ``data:`` section.
    """
    return data_section(load_experiment_doc(path))


def data_section(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The ``data:`` mapping of a document from load_experiment_doc (None when absent)."""
    config = doc.get("config") if "data" not in doc else doc
    data = config.get("data") if isinstance(config, dict) else None
    return dict(data) if isinstance(data, dict) else None


def load_experiment_doc(path: str) -> dict[str, Any]:
    """The experiment YAML/JSON at ``path`` (``-``: stdin; ``env:NAME``: the environment
    variable NAME, e.g. Determined's ``DET_EXPERIMENT_CONFIG``), or a Determined ``trial.json``
    (``config`` holds the experiment config there, ``hparams`` the trial's hyperparameters).
    Errors name the file, or ``$NAME`` for a variable."""
    import yaml

    label = config_label(path)
    try:
        text = _read_config_text(path, label)
        doc = yaml.safe_load(text) if text.strip() else {}
    except OSError as err:
        raise ConfigError(f"cannot read experiment config {path}: {err.strerror}") from err
    except yaml.YAMLError as err:
        line = str(err).splitlines()[0]
        raise ConfigError(f"experiment config {label} is not valid YAML: {line}") from err
    if not isinstance(doc, dict):
        raise ConfigError(f"experiment config {label} must be a mapping, got {type(doc).__name__}")
    return doc


ENV_PREFIX = "env:"


def config_label(path: str) -> str:
    """How messages name an ``--experiment-config``: the file, or ``$NAME`` for ``env:NAME``."""
    return f"${path[len(ENV_PREFIX) :]}" if path.startswith(ENV_PREFIX) else path


def _read_config_text(path: str, label: str) -> str:
    if path == "-":
        return sys.stdin.read()
    if path.startswith(ENV_PREFIX):
        text = os.environ.get(path[len(ENV_PREFIX) :])
        if text is None:
            raise ConfigError(f"experiment config {label} is not set")
        return text
    return Path(path).read_text()


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")


def _splits(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise ConfigError(f"data.splits={value!r} must be a list such as [train, val]")
    out = tuple(str(s).strip() for s in items)
    for s in out:
        if s not in SPLITS:
            raise ConfigError(f"data.splits has unknown split {s!r}; allowed: {', '.join(SPLITS)}")
    return tuple(dict.fromkeys(out))


def _bool(data: dict, name: str, default: bool) -> bool:
    value = data.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(f"data.{name}={value!r} must be true or false")
    return value


def _int(data: dict, name: str, default: int, *, minimum: int) -> int:
    value = data.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"data.{name}={value!r} must be an integer >= {minimum}")
    return value


def _subset(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"data.subset={value!r} must be null or a positive number of images")
    return value


def dumps(spec: DataSpec) -> str:
    """A stable JSON rendering of the spec (used in dry-run output and manifest keys)."""
    return json.dumps(spec.to_dict(), sort_keys=True)
