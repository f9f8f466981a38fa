"""Read a Determined experiment config and turn it into the trial's settings (pure, no I/O but YAML).

The experiment YAML is the user's one place. Determined 0.38 wants the training length in training
code, so it lives in ``hyperparameters``: ``max_iters`` (batches; an ASHA experiment with
``time_metric: batches`` may leave it to ``searcher.max_time``), ``val_interval`` and
``checkpoint_interval``; the other hyperparameters name the model and dotted mmengine overrides;
``data`` is what the startup hook stages. The deprecated 0.37 fields (``searcher.max_length``,
``min_validation_period``, ``min_checkpoint_period``) still work, with a notice (trial/expconf/).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from common import REPO_ROOT
from errors import ConfigError, one_line
from trial.settings.config import DataPaths, TrainSettings, resolve_base
from trial.settings.overrides import flatten_hparams, layer

EXPERIMENTS_DIR = REPO_ROOT / "experiments"
# Hyperparameters the trial itself interprets; every other one is a dotted mmengine key.
RESERVED_HPARAMS = frozenset(
    {
        "model",
        "global_batch_size",
        "pretrained",
        "image_scale",
        "num_workers",
        "log_interval",
        "max_iters",
        "val_interval",
        "checkpoint_interval",
        "dist_timeout",
    }
)


def load_experiment(path: str | Path) -> dict:
    """Parse an experiment YAML file; errors name the file."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"experiment config {path} does not exist") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"experiment config {path} is not valid YAML: {one_line(err)}") from err
    if not isinstance(config, dict):
        raise ConfigError(
            f"experiment config {path} must be a mapping, got {type(config).__name__}"
        )
    return config


def experiment_for_model(model: str) -> Path | None:
    """The bundled experiments/<model>.yaml, if there is one."""
    path = EXPERIMENTS_DIR / f"{model}.yaml"
    return path if path.exists() else None


def training_length(experiment: Mapping[str, Any], hparams: Mapping[str, Any]) -> int:
    """Training length in batches: ``hyperparameters.max_iters``, else ASHA's ``searcher.max_time``
    (``time_metric: batches``), else the deprecated ``searcher.max_length``."""
    if hparams.get("max_iters") is not None:
        return _positive_int(hparams["max_iters"], "hyperparameters.max_iters")
    searcher = experiment.get("searcher") or {}
    if searcher.get("max_time") is not None:
        if searcher.get("time_metric") != "batches":
            raise ConfigError(
                f"searcher.time_metric is {searcher.get('time_metric')!r}: set "
                "hyperparameters.max_iters (the trial trains by batches) or use time_metric: batches"
            )
        return _positive_int(searcher["max_time"], "searcher.max_time")
    if searcher.get("max_length") is not None:
        return searcher_length(experiment)
    raise ConfigError(
        "the experiment has no training length; set hyperparameters.max_iters (batches), "
        "e.g. max_iters: 90000"
    )


def searcher_length(experiment: Mapping[str, Any]) -> int:
    """The deprecated ``searcher.max_length`` in batches (``{batches: N}`` or a bare int)."""
    length = experiment.get("searcher", {}).get("max_length")
    if isinstance(length, Mapping):
        if set(length) != {"batches"}:
            raise ConfigError(
                f"searcher.max_length {dict(length)} must be in batches; better, set "
                "hyperparameters.max_iters"
            )
        length = length["batches"]
    return _positive_int(length, "searcher.max_length")


def interval(
    experiment: Mapping[str, Any], hparams: Mapping[str, Any], name: str, default: int
) -> int:
    """``hyperparameters.val_interval`` / ``checkpoint_interval`` in batches, else the deprecated
    ``min_validation_period`` / ``min_checkpoint_period``, else ``default``."""
    if hparams.get(name) is not None:
        return _positive_int(hparams[name], f"hyperparameters.{name}")
    field = DEPRECATED_PERIODS[name]
    period = experiment.get(field)
    if period is None:
        return default
    if not isinstance(period, Mapping) or set(period) != {"batches"}:
        raise ConfigError(
            f"{field} must be {{batches: N}}, got {period!r}; better, set hyperparameters.{name}"
        )
    return _positive_int(period["batches"], f"{field}.batches")


DEPRECATED_PERIODS = {
    "val_interval": "min_validation_period",
    "checkpoint_interval": "min_checkpoint_period",
}


def _positive_int(value: Any, field: str, unit: str = "batches") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        what = f"a positive whole number of {unit}" if unit else "a positive whole number"
        raise ConfigError(f"{field} must be {what}, got {value!r}")
    return value


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
    if max_iters is not None:
        _positive_int(max_iters, "--max-iters")
    check_trial_hparams(hparams)  # each value, also one that --max-iters replaces
    length = max_iters or training_length(experiment, hparams)
    val_interval = min(length, interval(experiment, hparams, "val_interval", length))
    ckpt_interval = interval(experiment, hparams, "checkpoint_interval", val_interval)
    global_batch = hparams.get("global_batch_size")
    if global_batch is not None and global_batch % world_size:
        raise ConfigError(_batch_message(global_batch, world_size))
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
        overrides=layer(
            flatten_hparams(hparams, reserved=RESERVED_HPARAMS), dict(extra_overrides or {})
        ),
    )


def check_trial_hparams(hparams: Mapping[str, Any]) -> None:
    """The trial's own hyperparameters present in ``hparams``, each on its own: one layer of them
    (the experiment's, ``--hparam``'s) is checked even where another layer replaces a value."""
    for name in ("max_iters", *DEPRECATED_PERIODS):
        if hparams.get(name) is not None:
            _positive_int(hparams[name], f"hyperparameters.{name}")
    if hparams.get("global_batch_size") is not None:
        _positive_int(hparams["global_batch_size"], "hyperparameters.global_batch_size", "images")
    if hparams.get("num_workers") is not None and hparams["num_workers"] != 0:
        _positive_int(hparams["num_workers"], "hyperparameters.num_workers", "")
    if hparams.get("log_interval") is not None:  # mmengine's LoggerHook refuses 0
        _positive_int(hparams["log_interval"], "hyperparameters.log_interval", "batches")
    if not isinstance(hparams.get("pretrained", True), bool):
        raise ConfigError(
            f"hyperparameters.pretrained must be true or false, got {hparams['pretrained']!r}"
        )
    scale = hparams.get("image_scale")
    if scale is not None and not (
        isinstance(scale, (list, tuple))
        and len(scale) == 2
        and all(isinstance(v, int) and v > 0 for v in scale)
    ):
        raise ConfigError(
            f"hyperparameters.image_scale must be [width, height] in pixels, got {scale!r}"
        )


def _batch_message(global_batch: int, slots: int) -> str:
    """What to do when the slots do not divide the global batch: the next multiple to pass."""
    fits = -(-global_batch // slots) * slots
    return (
        f"hyperparameters.global_batch_size {global_batch} must be a positive multiple of the "
        f"{slots} slots; pass e.g. --hparam global_batch_size={fits} (or set it in the "
        "experiment), or use a number of slots that divides it (--nproc locally, "
        "resources.slots_per_trial on a cluster)"
    )


def experiment_for_run(
    model: str, *, experiment: str | None = None, config: str | None = None
) -> tuple[dict, str]:
    """The experiment a run of MODEL trains and the one model it trains, the same locally and
    with ``--cluster``: ``config`` (a --config file) when given; else the own
    ``hyperparameters.model`` of experiments/MODEL.yaml (``retinanet-asha`` trains retinanet) or
    of ``--experiment`` (which must agree with MODEL); else MODEL (an ``mmdet::`` config) on the
    retinanet experiment as a template. An experiment used for another model is named after it.
    """
    path = Path(experiment) if experiment else experiment_for_model(model)
    doc = load_experiment(path or EXPERIMENTS_DIR / "retinanet.yaml")
    own = (doc.get("hyperparameters") or {}).get("model")
    if config:
        chosen = config
    elif path is None:
        chosen = resolve_base(model)
    else:
        if experiment and own and not same_model(own, model):
            raise ConfigError(
                f"MODEL {model} contradicts hyperparameters.model {own!r} of {path}: pass {own} "
                "as MODEL, or change the experiment's model"
            )
        chosen = own or model
    if chosen != own:
        doc["name"] = Path(chosen.replace("mmdet::", "")).stem
    return doc, chosen


def same_model(a: str, b: str) -> bool:
    """Whether two model references name the same config (``retinanet`` and its mmdet:: path)."""
    return a == b or resolve_base(a) == resolve_base(b)


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
