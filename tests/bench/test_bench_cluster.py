"""`invoke bench cluster` reads both sides the same way: mmengine's log lines, from a container's
output or from the master's trial log (each line prefixed by Determined)."""

from __future__ import annotations

import pytest

from bench.cluster import ITERS, LOG_INTERVAL, _median_time


def _line(i: int, seconds: float, prefix: str = "") -> str:
    return (
        f"{prefix}12/06 17:37:08 - mmengine - INFO - Iter(train) [{i:>2}/{ITERS}]  "
        f"lr: 5.0000e-04  eta: 0:00:10  time: {seconds:.4f}  data_time: 0.0100  loss: 2.1"
    )


def test_median_of_the_windows_past_warm_up_without_the_checkpoints_window():
    times = {10: 9.0, 20: 5.0, 30: 0.40, 40: 0.44, 50: 0.42, 60: 3.0}  # warm-up, then checkpoint
    log = "\n".join(_line(i, t) for i, t in times.items())
    assert _median_time(log) == pytest.approx(0.42)
    prefix = "[2026-12-06T17:37:08.520163Z] 6fca30dd [rank=0] || "  # the master's trial log
    assert _median_time("\n".join(_line(i, t, prefix) for i, t in times.items())) == 0.42


def test_a_log_without_enough_windows_is_an_error_not_a_figure():
    log = "\n".join(_line(i, 0.4) for i in range(LOG_INTERVAL, 40, LOG_INTERVAL))
    with pytest.raises(RuntimeError, match="iteration lines past warm-up"):
        _median_time(log)
