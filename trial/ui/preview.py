"""PredictionsPreviewHook: ``<work-dir>/predictions.png``, a few validation images as the model sees
them after each validation — ground truth on the left, its predictions (score >= 0.3) on the right.

It draws the samples the validation loop just predicted (no extra inference), with mmdet's own
DetLocalVisualizer, one row per image, and replaces the file atomically (temp file + rename).
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

from mmengine.hooks import Hook

from common import atomic_file
from errors import one_line

logger = logging.getLogger("trial")

ROW_WIDTH = 640  # each row (ground truth | prediction) is scaled to this width


class PredictionsPreviewHook(Hook):
    """Keep the first ``images`` samples of every validation and draw them when it ends (rank 0)."""

    priority = "LOW"

    def __init__(self, path: str | Path, *, images: int = 4, score_thr: float = 0.3) -> None:
        self.path = Path(path)
        self.images = images
        self.score_thr = score_thr
        self._samples: list[Any] = []

    def before_val_epoch(self, runner) -> None:
        self._samples = []

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        for sample in outputs or []:
            if len(self._samples) < self.images:
                self._samples.append(sample.cpu())

    def after_val_epoch(self, runner, metrics=None) -> None:
        samples, self._samples = self._samples, []
        if runner.rank != 0 or not samples:
            return
        try:
            draw_predictions(
                samples, self.path, meta=runner.val_dataloader.dataset.metainfo,
                backend_args=_image_backend_args(runner.cfg), score_thr=self.score_thr,
            )  # fmt: skip
        except Exception as err:  # a picture must never fail a run
            logger.warning("could not draw %s: %s", self.path.name, one_line(err))


def draw_predictions(
    samples: list[Any],
    path: Path,
    *,
    meta: dict,
    backend_args: dict | None = None,
    score_thr: float = 0.3,
) -> Path:
    """Draw ``samples`` (DetDataSamples with gt and pred instances) as rows of one PNG at ``path``."""
    import mmcv
    import numpy as np
    from mmdet.visualization import DetLocalVisualizer
    from mmengine.fileio import get
    from PIL import Image

    visualizer = DetLocalVisualizer(name=f"preview-{uuid.uuid4().hex[:8]}")
    visualizer.dataset_meta = meta
    rows = []
    for sample in samples:
        image = mmcv.imfrombytes(
            get(sample.img_path, backend_args=backend_args), channel_order="rgb"
        )
        visualizer.add_datasample(
            "preview", image, data_sample=sample, draw_gt=True, pred_score_thr=score_thr
        )
        row = Image.fromarray(visualizer.get_image())
        rows.append(row.resize((ROW_WIDTH, max(1, round(row.height * ROW_WIDTH / row.width)))))
    sheet = np.concatenate([np.asarray(row) for row in rows], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, "wb", perms=0o644) as f:
        Image.fromarray(sheet).save(f, format="png")
    return path


def _image_backend_args(cfg: Any) -> dict | None:
    """The file backend the validation images are read with (``gs://`` through the node cache)."""
    dataset = cfg["val_dataloader"]["dataset"]
    while "dataset" in dataset:
        dataset = dataset["dataset"]
    for step in dataset.get("pipeline", []):
        if step.get("type") == "LoadImageFromFile" and step.get("backend_args"):
            return dict(step["backend_args"])
    return None
