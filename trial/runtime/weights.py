"""The trial's side of staged pretrained weights: which checkpoints a trial's config loads, and
loading them from the node cache instead of the internet (staging/weights.py does the staging)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from trial.settings.config import apply_overrides, flatten_hparams, load_base_config, resolve_base
from trial.settings.hparams import RESERVED_HPARAMS, model_ref

logger = logging.getLogger("trial")


def needed_checkpoints(hparams: Mapping[str, Any]) -> list[str]:
    """The checkpoints a trial with these hyperparameters loads (none when pretrained is off)."""
    from staging.weights import checkpoint_refs

    if not hparams.get("pretrained", True):
        return []
    cfg = load_base_config(resolve_base(model_ref(hparams)))
    apply_overrides(cfg, flatten_hparams(hparams, reserved=RESERVED_HPARAMS))
    return checkpoint_refs(cfg)


def use_staged_weights(cfg: Any, data_section: Mapping[str, Any] | None) -> None:
    """When the experiment's ``data:`` asks for it (``weights_mirror`` or ``stage_weights``),
    stage ``cfg``'s checkpoints into the node cache (a hit after the startup hook) and point
    ``cfg`` at the cached files, in place. Every rank may call this: the cache downloads once."""
    if not data_section or not (
        data_section.get("weights_mirror") or data_section.get("stage_weights")
    ):
        return
    from staging.spec import DataSpec
    from staging.weights import checkpoint_refs, rewrite_checkpoints, stage_weights

    spec = DataSpec.from_dict(dict(data_section))
    refs = checkpoint_refs(cfg)
    if not refs:
        return
    result = stage_weights(spec.cache, refs, mirror=spec.weights_mirror, use_pins=True)
    rewrite_checkpoints(cfg, result.paths)
    for ref, path in result.paths.items():
        logger.info("pretrained %s from the node cache: %s", ref, path)
