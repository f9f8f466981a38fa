"""A local run's metrics: every report the trial makes, appended to ``<work-dir>/metrics.jsonl``.

Off-cluster there is no web UI; this file is where a local run's metrics go (what ``invoke train``'s
summary, the curves picture, ``invoke export`` and the tests read).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MetricsLog:
    """Wraps a core TrainContext: forwards every report and appends it to a JSON-lines file.

    Off-cluster there is no web UI; this file is where a local run's metrics go (and what tests read).
    """

    def __init__(self, inner: Any, path: Path, *, rank: int = 0) -> None:
        self._inner = inner
        self._path = Path(path)
        self._rank = rank  # recorded with every report: only rank 0 reports
        self._path.parent.mkdir(parents=True, exist_ok=True)

    def report_training_metrics(
        self, *, steps_completed: int, metrics: dict, **kwargs: Any
    ) -> None:
        self._append("training", steps_completed, metrics)
        self._inner.report_training_metrics(
            steps_completed=steps_completed, metrics=metrics, **kwargs
        )

    def report_validation_metrics(
        self, *, steps_completed: int, metrics: dict, **kwargs: Any
    ) -> None:
        self._append("validation", steps_completed, metrics)
        self._inner.report_validation_metrics(
            steps_completed=steps_completed, metrics=metrics, **kwargs
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _append(self, group: str, steps: int, metrics: dict) -> None:
        with self._path.open("a") as f:
            record = {"group": group, "steps_completed": steps, "metrics": metrics}
            f.write(json.dumps({**record, "rank": self._rank}) + "\n")


def read_metrics_log(path: Path) -> list[dict]:
    """The records a MetricsLog wrote, in order."""
    if not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
