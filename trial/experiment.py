"""Read a Determined experiment config and turn it into the trial's settings (pure, no I/O but YAML).

The experiment YAML is the user's one place: ``searcher.max_length.batches`` is the training length,
``min_validation_period`` / ``min_checkpoint_period`` (in batches) the intervals, ``hyperparameters``
the model and dotted mmengine overrides, ``data`` what the startup hook stages.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from errors import ConfigError
from trial.config import DataPaths, TrainSettings, flatten_hparams

REPO_ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS_DIR = REPO_ROOT / "experiments"
# Hyperparameters the trial itself interprets; every other one is a dotted mmengine key.
RESERVED_HPARAMS = frozenset(
    {"model", "global_batch_size", "pretrained", "image_scale", "num_workers", "log_interval"}
)


def load_experiment(path: str | Path) -> dict:
    """Parse an experiment YAML file; errors name the file."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"experiment config {path} does not exist") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"experiment config {path} is not valid YAML: {_one_line(err)}") from err
    if not isinstance(config, dict):
        raise ConfigError(
            f"experiment config {path} must be a mapping, got {type(config).__name__}"
        )
    return config


def experiment_for_model(model: str) -> Path | None:
    """The bundled experiments/<model>.yaml, if there is one."""
    path = EXPERIMENTS_DIR / f"{model}.yaml"
    return path if path.exists() else None


def searcher_length(experiment: Mapping[str, Any]) -> int:
    """Training length in batches from ``searcher.max_length`` (``{batches: N}`` or a bare int)."""
    length = experiment.get("searcher", {}).get("max_length")
    if isinstance(length, Mapping):
        if set(length) != {"batches"}:
            raise ConfigError(
                f"searcher.max_length {dict(length)} must be in batches, e.g. max_length: {{batches: 90000}}"
            )
        length = length["batches"]
    if not isinstance(length, int) or length < 1:
        raise ConfigError(
            f"searcher.max_length must be a positive number of batches, got {length!r}"
        )
    return length


def period_in_batches(experiment: Mapping[str, Any], field: str, default: int) -> int:
    """``min_validation_period`` / ``min_checkpoint_period`` in batches (default when unset)."""
    period = experiment.get(field)
    if period is None:
        return default
    if not isinstance(period, Mapping) or set(period) != {"batches"} or int(period["batches"]) < 1:
        raise ConfigError(f"{field} must be {{batches: N}} with N >= 1, got {period!r}")
    return int(period["batches"])


def trial_settings(
    experiment: Mapping[str, Any],
    hparams: Mapping[str, Any],
    *,
    data: DataPaths,
    work_dir: str,
    world_size: int = 1,
    max_iters: int | None = None,
    extra_overrides: Mapping[str, Any] | None = None,
    launcher: str = "none",
) -> TrainSettings:
    """Everything the config builder needs, from the experiment config and its hyperparameters."""
    length = max_iters or searcher_length(experiment)
    val_interval = min(length, period_in_batches(experiment, "min_validation_period", length))
    ckpt_interval = period_in_batches(experiment, "min_checkpoint_period", val_interval)
    global_batch = hparams.get("global_batch_size")
    if global_batch is not None and (
        int(global_batch) < world_size or int(global_batch) % world_size
    ):
        raise ConfigError(
            f"hyperparameters.global_batch_size {global_batch} must be a positive multiple of the "
            f"{world_size} slots"
        )
    scale = hparams.get("image_scale")
    return TrainSettings(
        data=data,
        work_dir=work_dir,
        max_iters=length,
        val_interval=val_interval,
        checkpoint_interval=min(ckpt_interval, length),
        batch_size=int(global_batch) // world_size if global_batch else None,
        num_workers=hparams.get("num_workers"),
        image_scale=tuple(scale) if scale else None,
        log_interval=min(int(hparams.get("log_interval", 50)), length),
        pretrained=bool(hparams.get("pretrained", True)),
        launcher=launcher,
        overrides={
            **flatten_hparams(hparams, reserved=RESERVED_HPARAMS),
            **dict(extra_overrides or {}),
        },
    )


def model_ref(hparams: Mapping[str, Any]) -> str:
    """The ``model`` hyperparameter: a bundled name, an ``mmdet::`` config, or a .py path."""
    model = hparams.get("model")
    if not isinstance(model, str) or not model:
        raise ConfigError(
            "hyperparameters.model is missing; set it to retinanet, maskrcnn, gfl or mmdet::..."
        )
    return model


def local_hparams(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """Concrete values for a local run: Determined's hyperparameter specs resolved deterministically.

    ``{type: const, val: v}`` -> v, ``categorical`` -> its first value, ``int``/``double`` -> the
    midpoint, ``log`` -> base ** midpoint exponent; nested mappings recurse; plain values stay.
    """
    return {key: _resolve_hparam(value) for key, value in hparams.items()}


def _resolve_hparam(value: Any) -> Any:
    if not isinstance(value, Mapping):
        return value
    kind = value.get("type")
    if kind == "const":
        return value["val"]
    if kind == "categorical":
        return value["vals"][0]
    if kind in ("int", "double"):
        mid = (value["minval"] + value["maxval"]) / 2
        return int(mid) if kind == "int" else mid
    if kind == "log":
        return value.get("base", 10) ** ((value["minval"] + value["maxval"]) / 2)
    if kind == "object":
        return local_hparams(value.get("val", {}))
    return local_hparams(value)


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())
