"""TensorBoard event files while a run trains (the curves PNG at its end is trial/ui/curves.py).

mmengine's own visualizer does the TensorBoard part: LoggerHook sends every logged scalar (losses,
lr, ``coco/bbox_mAP``…) to the visualizer's backends, and mmdet's DetVisualizationHook (as trial/engine/drawing.py's
SparseDetVisualizationHook, which reads only the images it draws) draws a
validation image with its predictions every ``interval`` validation images. The trial gives the
visualizer one ``TensorboardVisBackend``; its directory is Determined's TensorBoard path on a
cluster (uploaded with every metrics report, so ``det tensorboard start`` shows it) and
``<work_dir>/tensorboard`` locally.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

TENSORBOARD_DIR = "tensorboard"
VAL_IMAGE_INTERVAL = 50  # mmdet's default: one drawn validation image per 50


def apply_tensorboard(cfg: Any, *, backend_args: Mapping[str, Any] | None = None) -> None:
    """Send mmengine's scalars and drawn validation images to TensorBoard (directory set later)."""
    visualizer = dict(cfg.get("visualizer") or {"type": "DetLocalVisualizer"})
    visualizer.update(vis_backends=[{"type": "TensorboardVisBackend"}], name="visualizer")
    cfg["visualizer"] = visualizer
    cfg.setdefault("default_hooks", {})["visualization"] = {
        "type": "SparseDetVisualizationHook",
        "draw": True,
        "interval": VAL_IMAGE_INTERVAL,
        # the hook re-reads each validation image by path: through the gs:// cache when staged so
        "backend_args": dict(backend_args) if backend_args else None,
    }


def set_tensorboard_dir(cfg: Any, core_context: Any, work_dir: Path) -> Path:
    """Point the TensorBoard backend at Determined's TensorBoard path (or ``work_dir/tensorboard``)."""
    try:
        path = core_context.train.get_tensorboard_path()
    except ValueError:  # a core context without a TensorBoard manager
        path = None
    path = Path(path) if path else Path(work_dir) / TENSORBOARD_DIR
    for backend in cfg.get("visualizer", {}).get("vis_backends", []):
        if backend.get("type") == "TensorboardVisBackend":
            backend["save_dir"] = str(path)
    return path
