"""The benchmarks' harness and its output, tested with their readers: what bench/trial.py prints is
what ci/gpucheck_probes.py (the GPU check's bench step) reads."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

import pytest

from bench import harness
from common import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "ci"))
import gpucheck_probes


def test_report_prints_one_json_line_that_results_reads_back(capsys):
    print("a human line with {braces}")
    harness.report("trial", "overhead", layout="1 rank", added_ms_per_step=0.25)
    harness.report("staging", "disk", ratio=1.2, met=True)
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 3
    assert harness.results(out, bench="trial") == [
        {"bench": "trial", "result": "overhead", "layout": "1 rank", "added_ms_per_step": 0.25}
    ]
    assert [r["result"] for r in harness.results(out)] == ["overhead", "disk"]
    assert harness.results(out, result="disk")[0]["met"] is True


def test_one_verdict_wording_and_an_interleaved_median_loop():
    assert (harness.verdict(True), harness.verdict(False)) == ("met", "MISSED")
    assert harness.goal("<= 1.5x", False) == "goal <= 1.5x: MISSED"
    order = []
    figures = harness.interleaved(
        {"plain": lambda i: order.append(("plain", i)) or i, "trial": lambda i: order.append(("trial", i)) or 10 + i},
        3,
    )  # fmt: skip
    assert order == [
        ("plain", 0),
        ("trial", 0),
        ("plain", 1),
        ("trial", 1),
        ("plain", 2),
        ("trial", 2),
    ]
    assert figures == {"plain": [0, 1, 2], "trial": [10, 11, 12]}
    assert harness.medians(figures) == {"plain": 1, "trial": 11}
    assert harness.median_of(lambda i: [5.0, 1.0, 3.0][i], 3) == 3.0


def test_the_trial_bench_lines_are_what_the_gpu_checks_bench_step_reads(monkeypatch, capsys):
    """bench.trial's per-layout lines, with its measurements stubbed, through the probe's reader."""
    import bench.trial as trial_bench

    monkeypatch.setattr(
        trial_bench,
        "_compare",
        lambda runs, layout, net: {"plain": [2.0, 2.2], "trial": [2.1, 2.3]},
    )
    monkeypatch.setattr(
        trial_bench, "_launch", lambda *a, **k: {"plain": [0.001, 0.001], "trial": [0.0015, 0.0017]}
    )
    monkeypatch.setattr(trial_bench, "_two_nodes", _no_namespaces)
    trial_bench.main(2, layouts=("1 rank", "2 nodes"))
    out = capsys.readouterr().out
    assert "1 rank: plain mmengine Runner 2.100 s/iter, bundled trial 2.200 s/iter" in out
    summary = gpucheck_probes.bench_summary(out)
    assert summary["plain_s_per_iter"] == pytest.approx(2.1)
    assert summary["ratio_trial_over_plain"] == pytest.approx(2.2 / 2.1)
    assert summary["trial_added_ms_per_step"] == pytest.approx(0.6)
    assert summary["runs"] == {"plain": [2.0, 2.2], "trial": [2.1, 2.3]}
    skipped = harness.results(out, result="retinanet")[-1]
    assert skipped == {"bench": "trial", "result": "retinanet", "layout": "2 nodes",
                       "skipped": "no namespaces here"}  # fmt: skip


@contextlib.contextmanager
def _no_namespaces(wanted: bool):
    yield None, "no namespaces here"


def test_the_probe_refuses_output_without_the_one_rank_results():
    with pytest.raises(SystemExit, match="no 1-rank result lines"):
        gpucheck_probes.bench_summary(
            '{"bench": "trial", "result": "overhead", "layout": "2 ranks"}'
        )


@pytest.mark.slow
def test_the_trial_benchs_own_process_reports_the_tiny_models_steps(tmp_path):
    """A real ``python -m bench.trial`` (the tiny model's line, 1 rank, 1 run per side)."""
    argv = [sys.executable, "-m", "bench.trial", "--lines", "overhead", "--layouts", "1 rank",
            "--runs", "1"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TMPDIR": str(tmp_path)}
    proc = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (line,) = harness.results(proc.stdout, bench="trial", result="overhead")
    assert line["layout"] == "1 rank" and len(line["runs"]["plain"]) == 1
    assert line["trial_ms_per_step"] > 0 and line["plain_ms_per_step"] > 0
    json.dumps(line)  # plain JSON: the GPU check stores it as is
