"""The trial's own checks of a run's hyperparameters and overrides, shared by both paths.

``invoke train`` (local preflight) and ``invoke train --cluster`` (before the dry run or the
submission) call ``checked_config``: it builds, in-process and without data or a model, the exact
mmengine config the trial would build, so both paths refuse the same mistakes in one line — an
unknown hyperparameter or config key (with the closest valid one), a training length or batch size
that is not a positive whole number, a ``global_batch_size`` that the slots do not divide, a
model or config that does not load. Determined's own experiment rules are trial/expconf/'s.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from errors import ConfigError
from trial.settings.config import DataPaths, build_config, load_base_config, resolve_base
from trial.settings.hparams import RESERVED_HPARAMS, model_ref, trial_settings
from trial.settings.overrides import layer, parse_set_options

# What the cluster's data will be called in the checked config (the paths do not change the checks).
PLACEHOLDER_DATA = DataPaths(
    train_ann="/staged/annotations/instances_train2017.json",
    val_ann="/staged/annotations/instances_val2017.json",
    train_images="/staged/train2017/",
    val_images="/staged/val2017/",
)


def command_line_overrides(
    hparams: Mapping[str, Any], *, sets: Sequence[str] = (), hparam_items: Sequence[str] = ()
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--hparam`` layered over ``hparams``, and the ``--set`` keys: (hparams, overrides).

    ``--set`` takes mmengine keys only; a trial hyperparameter there (``--set max_iters=5``) is an
    error pointing at ``--hparam``, so it means the same thing locally and on a cluster."""
    overrides = parse_set_options(list(sets), option="--set")
    for key, value in overrides.items():
        if key in RESERVED_HPARAMS:
            raise ConfigError(
                f"--set {key}: {key} is a trial hyperparameter, not an mmengine config key; "
                f"pass --hparam {key}={value}"
            )
    return layer(hparams, parse_set_options(list(hparam_items), option="--hparam")), overrides


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
) -> Any:
    """The config the trial builds from these inputs; ConfigError (one line) for any mistake.

    ``model_file`` stands in for ``hparams['model']`` where that names a path valid only inside
    the cluster's context directory (``--cluster --config FILE``)."""
    base = load_base_config(resolve_base(model_file or model_ref(hparams)))
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
    return build_config(base, settings)


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
