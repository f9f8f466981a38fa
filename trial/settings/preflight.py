"""The trial's own checks of a run's hyperparameters and overrides, shared by both paths.

``invoke train`` (local preflight) and ``invoke train --cluster`` (before the dry run or the
submission) call ``checked_config``: it builds, in-process and without data, the exact mmengine
config the trial would build, and the model, optimizer and schedulers it describes
(trial/settings/buildcheck.py), so both paths refuse the same mistakes in one line — an unknown
hyperparameter or config key (with the closest valid one), a training length or batch size that
is not a positive whole number, a ``global_batch_size`` that the slots do not divide, a model or
config that does not load, a value that does not build. ``check_layer`` checks one layer of
hyperparameters on its own (an experiment's, which the local profile partly replaces).
Determined's own experiment rules are trial/expconf/'s.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from errors import ConfigError
from trial.settings.buildcheck import check_buildable
from trial.settings.config import DataPaths, build_config, load_base_config, resolve_base
from trial.settings.hparams import (
    RESERVED_HPARAMS,
    check_trial_hparams,
    model_ref,
    same_model,
    trial_settings,
)
from trial.settings.overrides import apply_overrides, flatten_hparams, layer, parse_set_options

# What the cluster's data will be called in the checked config (the paths do not change the checks).
PLACEHOLDER_DATA = DataPaths(
    train_ann="/staged/annotations/instances_train2017.json",
    val_ann="/staged/annotations/instances_val2017.json",
    train_images="/staged/train2017/",
    val_images="/staged/val2017/",
)


def command_line_overrides(
    hparams: Mapping[str, Any],
    *,
    sets: Sequence[str] = (),
    hparam_items: Sequence[str] = (),
    model: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--hparam`` layered over ``hparams``, and the ``--set`` keys: (hparams, overrides).

    ``--set`` takes mmengine keys only; a trial hyperparameter there (``--set max_iters=5``) is an
    error pointing at ``--hparam``, so it means the same thing locally and on a cluster. The
    ``--hparam`` values are checked on their own (``--max-iters`` may replace max_iters later),
    and ``--hparam model=`` must name ``model``, the model MODEL (or --config) trains."""
    overrides = parse_set_options(list(sets), option="--set")
    for key, value in overrides.items():
        if key in RESERVED_HPARAMS:
            raise ConfigError(
                f"--set {key}: {key} is a trial hyperparameter, not an mmengine config key; "
                f"pass --hparam {key}={value}"
            )
    items = parse_set_options(list(hparam_items), option="--hparam")
    check_trial_hparams(items)
    wanted = items.get("model")
    if model is not None and wanted is not None and not same_model(str(wanted), model):
        raise ConfigError(
            f"--hparam model={wanted} contradicts MODEL {model}: MODEL is the model that trains "
            f"(or --config's); run `invoke train {wanted}` instead"
        )
    return layer(hparams, items), overrides


def check_layer(hparams: Mapping[str, Any], base: Any) -> None:
    """One layer of hyperparameters (an experiment's own) checked on its own against the model's
    base config, as a cluster run of it would be: the trial's values, hyperparameter names, and
    dotted config keys. Locally the CPU profile replaces some of them; a typo there
    (``optim_wrapper.optimizer.lrr``) is refused all the same."""
    check_trial_hparams(hparams)
    _check_hparam_names(hparams, base)
    apply_overrides(copy.deepcopy(base), flatten_hparams(hparams, reserved=RESERVED_HPARAMS))


def checked_config(
    experiment: Mapping[str, Any],
    hparams: Mapping[str, Any],
    *,
    overrides: Mapping[str, Any] | None = None,
    data: DataPaths = PLACEHOLDER_DATA,
    work_dir: str = "work_dirs/check",
    world_size: int = 1,
    max_iters: int | None = None,
    model_file: str | None = None,
    base: Any = None,
) -> Any:
    """The config the trial builds from these inputs; ConfigError (one line) for any mistake.

    ``model_file`` stands in for ``hparams['model']`` where that names a path valid only inside
    the cluster's context directory (``--cluster --config FILE``); ``base``: that model's base
    config, when the caller loaded it already (model_base)."""
    base = model_base(model_file or model_ref(hparams)) if base is None else base
    _check_hparam_names(hparams, base)
    settings = trial_settings(
        experiment,
        hparams,
        data=data,
        work_dir=work_dir,
        world_size=world_size,
        max_iters=max_iters,
        extra_overrides=overrides,
    )
    cfg = build_config(base, settings)
    check_buildable(cfg, changed=settings.overrides)
    return cfg


def model_base(model: str) -> Any:
    """The base config of a model reference (a bundled name, an mmdet:: config, a .py file)."""
    return load_base_config(resolve_base(model))


def slots(experiment: Mapping[str, Any]) -> int:
    """``resources.slots_per_trial`` (Determined's default: 1): the ranks a cluster trial gets."""
    value = (experiment.get("resources") or {}).get("slots_per_trial", 1)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


def _check_hparam_names(hparams: Mapping[str, Any], base: Any) -> None:
    """A plain (undotted) name that is no config key but close to a trial hyperparameter is a typo
    (``global_batch_sise``); dotted names are checked as config keys by build_config."""
    for key in hparams:
        if key in RESERVED_HPARAMS or "." in key or key in base:
            continue
        close = difflib.get_close_matches(key, sorted(RESERVED_HPARAMS), n=1, cutoff=0.75)
        if close:
            raise ConfigError(f"unknown hyperparameter {key!r}; did you mean {close[0]!r}?")
