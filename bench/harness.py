"""The one harness of every benchmark, and of every reader of a benchmark's output.

- ``median_of(fn, runs)``: the median of ``fn(i)`` for i in 0..runs-1 (the median loop);
- ``interleaved(sides, runs)``: every side once per round, in turn, ``runs`` rounds, so drift on a
  shared machine hits all sides alike; the figures per side, in run order;
- ``verdict(ok)`` / ``goal(text, ok)``: the one wording of a goal's outcome (``met`` / ``MISSED``);
- ``report(bench, result, **fields)``: one JSON line per result on stdout,
  ``{"bench": ..., "result": ..., ...}``, next to the human-readable line it backs;
- ``results(text, ...)``: those lines read back from a benchmark's output. This output is an
  interface: ci/gpucheck_probes.py reads the trial benchmark's results with it, and
  tests/bench/test_bench_harness.py runs a benchmark and its readers together.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterator, Mapping
from typing import Any

MET, MISSED = "met", "MISSED"


def median_of(fn: Callable[[int], float], runs: int) -> float:
    """The median of ``fn(0) … fn(runs - 1)``."""
    return statistics.median(fn(i) for i in range(runs))


def interleaved(sides: Mapping[str, Callable[[int], float]], runs: int) -> dict[str, list[float]]:
    """``runs`` rounds of every side in turn (a, b, a, b, …); each side's figures in run order."""
    figures: dict[str, list[float]] = {name: [] for name in sides}
    for index in range(runs):
        for name, run in sides.items():
            figures[name].append(run(index))
    return figures


def medians(figures: Mapping[str, list[float]]) -> dict[str, float]:
    """The median of each side's figures."""
    return {name: statistics.median(values) for name, values in figures.items()}


def verdict(ok: bool) -> str:
    """``met`` or ``MISSED``: how every benchmark says whether a goal was reached."""
    return MET if ok else MISSED


def goal(text: str, ok: bool) -> str:
    """``goal <= 1.5x: met``: the goal as a benchmark line ends."""
    return f"goal {text}: {verdict(ok)}"


def report(bench: str, result: str, **fields: Any) -> dict[str, Any]:
    """Print one result as one JSON line (``bench``, ``result`` and its fields); return it."""
    record = {"bench": bench, "result": result, **fields}
    print(json.dumps(record, default=float), flush=True)
    return record


def results(text: str, *, bench: str | None = None, result: str | None = None) -> list[dict]:
    """The result lines ``report`` printed into ``text`` (a benchmark's stdout), in order; only
    those of ``bench`` / ``result`` when given. Other lines are ignored."""
    return [
        record
        for record in _records(text)
        if (bench is None or record["bench"] == bench)
        and (result is None or record["result"] == result)
    ]


def _records(text: str) -> Iterator[dict]:
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith('{"bench": '):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "result" in record:
            yield record
