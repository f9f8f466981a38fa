"""One PNG of a run's curves at its end (``<work-dir>/curves.png``): losses, learning rate and
validation mAP over iterations, drawn from the run's ``metrics.jsonl``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common import atomic_file

CURVES_FILE = "curves.png"


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
