"""A work directory holds one run's truth (issue 17, items 1, 2, 4 and the file modes).

One real 2-iteration RetinaNet run on the COCO sample, then what a user does next in the same work
directory: start again (refused, nothing changed), resume it as another model (refused), start
fresh (the old run is gone), export (names the checkpoint it used). About 2.5 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from inputs_helpers import error_lines

from common import REPO_ROOT as REPO
from trial.runtime.metrics_log import read_metrics_log

pytestmark = [pytest.mark.slow, pytest.mark.training]


FAST = ["image_scale=[128, 128]", "global_batch_size=2", "log_interval=1", "num_workers=0"]


def invoke(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "invoke", "-r", str(REPO), *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900)


def files(work: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(work)): p.read_bytes() for p in sorted(work.rglob("*")) if p.is_file()
    }


def validation_steps(tensorboard: Path) -> dict[str, list[int]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps: dict[str, list[int]] = {}
    for events in tensorboard.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            if tag.endswith("bbox_mAP"):
                steps.setdefault(tag, []).extend(e.step for e in acc.Scalars(tag))
    return steps


def test_one_run_per_work_dir(tmp_path, coco_sample):
    work = tmp_path / "w"
    hparams = [arg for item in FAST for arg in ("--hparam", item)]
    base = ["train", "retinanet", "--data", str(coco_sample), "--work-dir", str(work), *hparams]
    umask = os.umask(0o022)
    try:
        first = invoke(*base, "--hparam", "max_iters=2", cwd=tmp_path)
    finally:
        os.umask(umask)
    assert first.returncode == 0, first.stderr[-3000:]
    # --hparam max_iters reaches the run (it trained the local default of 200 before)
    assert json.loads((work / "result.json").read_text())["steps"] == 2
    # validation mAP is at its iteration in TensorBoard, not at epoch 0
    assert validation_steps(work / "tensorboard") == {"coco/bbox_mAP": [2]}
    for name in ("experiment.yaml", "curves.png", "result.json", "metrics.jsonl"):
        assert (work / name).stat().st_mode & 0o777 == 0o644, name

    before = files(work)
    again = invoke(*base, "--max-iters", "1", cwd=tmp_path)
    assert again.returncode == 1 and "Traceback" not in again.stderr, again.stderr[-3000:]
    assert error_lines(again) == [
        f"error: --work-dir {work} already holds a run (1 checkpoint, metrics.jsonl, result.json); "
        "continue it with --resume, replace it with --fresh (deletes that run), or pick another "
        "--work-dir"
    ]
    other = invoke("train", "gfl", "--work-dir", str(work), "--resume", *hparams, cwd=tmp_path)
    assert other.returncode == 1 and "Traceback" not in other.stderr, other.stderr[-3000:]
    (line,) = error_lines(other)
    assert "is of model 'retinanet', not 'gfl'; resume it as retinanet" in line
    assert files(work) == before  # nothing in the work dir changed, experiment.yaml included

    old_checkpoints = {p.name for p in (work / "checkpoints").iterdir()}
    fresh = invoke(*base, "--max-iters", "1", "--fresh", cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    (new,) = [p.name for p in (work / "checkpoints").iterdir()]
    assert new not in old_checkpoints
    assert {r["steps_completed"] for r in read_metrics_log(work / "metrics.jsonl")} == {1}

    export = invoke("export", str(work), "--out", str(tmp_path / "export"), cwd=tmp_path)
    assert export.returncode == 0, export.stderr[-3000:]
    assert export.stdout.strip().splitlines()[-1] == (
        f"exported retinanet (iteration 1, checkpoint {new}) to {tmp_path / 'export'}"
    )
    info = json.loads((tmp_path / "export" / "export.json").read_text())
    assert info["source"]["checkpoint"] == new and info["validation"]["batches"] == 1


def test_a_short_run_trains_at_the_configured_lr_and_resuming_it_changes_nothing(
    tmp_path, coco_sample
):
    """A 4-iteration run trained at 0.001x its lr throughout (the warmup never left its first
    step: metrics.jsonl showed lr 5e-07 against 5e-04), recorded max_iters 200, and `--resume`
    of it trained "4 iterations" again (issue 29, W9, W11, W3)."""
    from trial.settings.local_profile import LOCAL_HPARAMS

    work = tmp_path / "w"
    hparams = [arg for item in FAST for arg in ("--hparam", item)]
    base = ["train", "retinanet", "--data", str(coco_sample), "--work-dir", str(work), *hparams]
    first = invoke(*base, "--max-iters", "4", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    configured = LOCAL_HPARAMS["optim_wrapper.optimizer"]["lr"]
    lrs = [r["metrics"]["lr"] for r in read_metrics_log(work / "metrics.jsonl")
           if r["group"] == "training"]  # fmt: skip
    assert len(lrs) == 4 and max(lrs) == pytest.approx(configured), lrs
    recorded = yaml.safe_load((work / "experiment.yaml").read_text())
    assert recorded["hyperparameters"]["max_iters"] == 4

    before = files(work)
    again = invoke(*base, "--resume", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.strip().splitlines()[-1] == (
        f"retinanet: already at iteration 4 of 4 in {work}; nothing to do (a larger --max-iters "
        "trains further)"
    )
    assert files(work) == before
