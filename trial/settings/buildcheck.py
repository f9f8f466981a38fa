"""Build what a checked config describes, in-process and without data, before a run starts.

mmengine builds the model, the optimizer wrapper and the parameter schedulers only inside the
trial, so a value that is wrong only at build time (``optim_wrapper.optimizer.lr=abc``,
``model.backbone.depth=19``, a component without ``type``) passed every key check and failed the
trial with two error lines after a model build. Here they are built once on the CPU (random
initial weights, nothing downloaded, no data read: well under a second for R50 detectors) and the
data loaders' numbers are checked, so such a value is one line naming the key, locally and for
``--cluster`` alike (trial/settings/preflight.py).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from errors import ConfigError, one_line

LOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")
# What a data loader needs as numbers: (key, smallest value, what it counts).
LOADER_NUMBERS = (("batch_size", 1, "images per rank"), ("num_workers", 0, "worker processes"))


def check_buildable(cfg: Any, *, changed: Mapping[str, Any]) -> None:
    """Build ``cfg``'s model, optimizer wrapper and parameter schedulers, and check its data
    loaders' numbers; ConfigError (one line) naming the key of ``changed`` (the dotted keys the
    experiment and the command line set) that most likely broke the part that failed."""
    from mmdet.registry import MODELS
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import PARAM_SCHEDULERS, DefaultScope

    for loader in LOADERS:
        _check_loader(cfg, loader)
    with (  # the constructors' own notices are the trial's to log, not the preflight's
        warnings.catch_warnings(),
        DefaultScope.overwrite_default_scope(cfg.get("default_scope") or "mmdet"),
    ):
        warnings.simplefilter("ignore")
        # builders write into the config they get (mmdet heads take their train_cfg): copies
        model = _built("model", lambda: MODELS.build(copy.deepcopy(cfg["model"])), changed)
        wrapper = _built(
            "optim_wrapper",
            lambda: build_optim_wrapper(model, copy.deepcopy(cfg["optim_wrapper"])),
            changed,
        )
        for index, sched in enumerate(cfg.get("param_scheduler") or []):
            _built(
                "param_scheduler",
                lambda s=sched: PARAM_SCHEDULERS.build(
                    dict(s), default_args={"optimizer": wrapper}
                ),
                changed,
                where=f"param_scheduler.{index}",
            )


def _built(part: str, build: Callable[[], Any], changed: Mapping[str, Any], where: str = "") -> Any:
    try:
        return build()
    except Exception as err:  # whatever a constructor raises for a bad value
        why = f"{type(err).__name__}: {one_line(err)[:200]}"
        key = _suspect(part, why, changed)
        named = f"config key {key!r} ({changed[key]!r})" if key else f"config key {where or part!r}"
        raise ConfigError(
            f"{named}: {where or part} does not build ({why}); fix the value (--set, --hparam "
            "or the experiment's hyperparameters)"
        ) from None


def _suspect(part: str, why: str, changed: Mapping[str, Any]) -> str | None:
    """The changed key under ``part`` that the error most likely comes from: one whose value
    the error message shows, else the deepest (the most specific) one."""
    under = [k for k in changed if k == part or k.startswith(part + ".")]
    shown = [k for k in under if not isinstance(changed[k], Mapping) and str(changed[k]) in why]
    ranked = shown or sorted(under, key=lambda k: k.count("."), reverse=True)
    return ranked[0] if ranked else None


def _check_loader(cfg: Any, loader: str) -> None:
    settings = cfg.get(loader) or {}
    for key, smallest, what in LOADER_NUMBERS:
        value = settings.get(key, smallest)
        if isinstance(value, bool) or not isinstance(value, int) or value < smallest:
            kind = "a positive whole number" if smallest == 1 else "a whole number >= 0"
            raise ConfigError(f"config key '{loader}.{key}' must be {kind} ({what}), got {value!r}")
