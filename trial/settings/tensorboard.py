"""Pictures of a run: TensorBoard event files while it trains, one PNG of its curves at the end.

mmengine's own visualizer does the TensorBoard part: LoggerHook sends every logged scalar (losses,
lr, ``coco/bbox_mAP``…) to the visualizer's backends, and mmdet's DetVisualizationHook (as trial/engine/drawing.py's
SparseDetVisualizationHook, which reads only the images it draws) draws a
validation image with its predictions every ``interval`` validation images. The trial gives the
visualizer one ``TensorboardVisBackend``; its directory is Determined's TensorBoard path on a
cluster (uploaded with every metrics report, so ``det tensorboard start`` shows it) and
``<work_dir>/tensorboard`` locally. The curves PNG is drawn from the run's ``metrics.jsonl``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

TENSORBOARD_DIR = "tensorboard"
CURVES_FILE = "curves.png"
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


def plot_curves(records: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """One PNG of a run's reported metrics: losses, learning rate, validation mAP over steps.

    ``records`` are metrics.jsonl lines (group, steps_completed, metrics). Written to a temp file
    and renamed; returns None when nothing was reported.
    """
    panels = _panels(records)
    if not panels:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5 * len(panels), 4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    for axes, (title, series) in zip(
        figure.subplots(1, len(panels), squeeze=False)[0], panels, strict=True
    ):
        for name, (steps, values) in sorted(series.items()):
            axes.plot(steps, values, marker="o" if len(steps) < 20 else None, label=name)
        axes.set_title(title)
        axes.set_xlabel("iteration")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    from trial.verbs.outdir import atomic_file

    with atomic_file(path, "wb") as f:
        figure.savefig(f, format="png")
    return Path(path)


def _panels(records: Sequence[Mapping[str, Any]]) -> list[tuple[str, dict]]:
    """(title, {metric: (steps, values)}) for losses, lr and validation mAP, when present."""
    wanted = [
        ("losses", "training", lambda k: k.startswith("loss")),
        ("learning rate", "training", lambda k: k == "lr"),
        ("validation mAP", "validation", lambda k: k.endswith("mAP") or k.endswith("mAP_50")),
    ]
    panels = []
    for title, group, keep in wanted:
        series: dict[str, tuple[list, list]] = {}
        for record in records:
            if record.get("group") != group:
                continue
            for key, value in record.get("metrics", {}).items():
                if keep(key) and isinstance(value, (int, float)):
                    steps, values = series.setdefault(key, ([], []))
                    steps.append(record["steps_completed"])
                    values.append(value)
        if series:
            panels.append((title, series))
    return panels
