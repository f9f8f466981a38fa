"""The trial's side of staged pretrained weights: loading them from the node cache instead of the
internet (staging/weights.py does the staging; trial/settings/pretrained.py names them)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger("trial")


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
