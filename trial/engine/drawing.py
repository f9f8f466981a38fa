"""mmdet's DetVisualizationHook, reading a validation image only when it draws it.

mmdet 3.3's hook reads the first image of *every* validation batch (from disk or ``gs://``) and then
draws one in ``interval``; this subclass skips the read as well when it will not draw, so TensorBoard
pictures cost one image read per ``interval`` batches instead of one per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mmdet.engine.hooks import DetVisualizationHook
from mmdet.registry import HOOKS


@HOOKS.register_module()
class SparseDetVisualizationHook(DetVisualizationHook):
    """Draw (and read) the first image of every ``interval``-th validation batch only."""

    def after_val_iter(
        self, runner: Any, batch_idx: int, data_batch: dict, outputs: Sequence[Any]
    ) -> None:
        if self.draw and (runner.iter + batch_idx) % self.interval == 0:
            super().after_val_iter(runner, batch_idx, data_batch, outputs)
