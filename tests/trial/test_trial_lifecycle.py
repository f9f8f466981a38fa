"""Learning, resume and preemption, end to end through `python -m trial --local` on CPU."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from common import REPO_ROOT as REPO
from trial.runtime.metrics_log import read_metrics_log
from trial.runtime.workdir import checkpoint_problem
from trial.settings.hparams import EXPERIMENTS_DIR
from trial.verbs.local import LocalTrain, train_local, trial_command

pytestmark = [pytest.mark.slow, pytest.mark.training]

SMALL = ["image_scale=[160, 160]", "global_batch_size=2", "log_interval=2", "num_workers=0"]


def interrupt_after_first_report(proc: subprocess.Popen, work: Path, sig: signal.Signals) -> None:
    """Send ``sig`` once the run has reported a training step; it must exit 0 (its own session:
    whatever is left is killed at the end)."""
    try:
        deadline = time.monotonic() + 300
        while not read_metrics_log(work / "metrics.jsonl") and time.monotonic() < deadline:
            assert proc.poll() is None, "the run ended before it was interrupted"
            time.sleep(0.5)
        proc.send_signal(sig)
        assert proc.wait(timeout=300) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_retinanet_learns_the_shapes_set(tmp_path, shapes_root):
    """bbox mAP after a few minutes of CPU training is clearly above its value at the start.

    RetinaNet with the R18-FPN backbone (mmdet's retinanet_r18_fpn_1x_coco) and the local CPU
    profile (128 px, batch 4, AdamW), so it learns in minutes on 2 cores.
    """
    common = dict(model=LEARN_MODEL, data=str(shapes_root))
    start = train_local(LocalTrain(**common, max_iters=1, work_dir=str(tmp_path / "start")))
    trained = train_local(
        LocalTrain(**common, max_iters=LEARN_ITERS, work_dir=str(tmp_path / "end"))
    )
    before, after = start["validation"]["bbox_mAP"], trained["validation"]["bbox_mAP"]
    print(f"bbox_mAP at start {before:.4f}, after {LEARN_ITERS} iterations {after:.4f}")
    assert after >= max(before + 0.03, 2 * before), (before, after)


LEARN_MODEL = "mmdet::retinanet/retinanet_r18_fpn_1x_coco.py"
LEARN_ITERS = 150


def test_resume_continues_at_n_plus_1_with_the_same_schedule_and_optimizer(tmp_path, shapes_root):
    """Straight 8 iterations vs 4 + resume to 8: same lr at every step, same final weights."""
    common = dict(
        model="retinanet",
        data=str(shapes_root),
        max_iters=8,
        hparams=[*SMALL, "checkpoint_interval=4"],
    )
    straight = tmp_path / "straight"
    result = train_local(LocalTrain(**common, work_dir=str(straight)))
    ckpts = {
        json.loads(m.read_text())["steps_completed"]: m.parent
        for m in (straight / "checkpoints").glob("*/metadata.json")
    }
    assert sorted(ckpts) == [4, 8] and result["checkpoint"] == ckpts[8].name

    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(ckpts[4], resumed / "checkpoints" / ckpts[4].name)
    again = train_local(LocalTrain(**common, work_dir=str(resumed), resume=True))
    assert again["steps"] == 8
    log = "".join(p.read_text() for p in (resumed / "run").glob("*/*.log"))
    assert "no sample replayed" in log and "Advance dataloader" not in log  # issue 10

    first = [r for r in read_metrics_log(straight / "metrics.jsonl") if r["group"] == "training"]
    second = [r for r in read_metrics_log(resumed / "metrics.jsonl") if r["group"] == "training"]
    assert [r["steps_completed"] for r in second] == [6, 8]  # continued at 5, not from 1
    for a, b in zip(first[2:], second, strict=True):
        assert a["steps_completed"] == b["steps_completed"]
        assert b["metrics"]["lr"] == pytest.approx(a["metrics"]["lr"], rel=1e-9)

    end_a = torch.load(ckpts[8] / "checkpoint.pth", weights_only=False)
    end_b = torch.load(
        resumed / "checkpoints" / again["checkpoint"] / "checkpoint.pth", weights_only=False
    )
    assert end_b["meta"]["iter"] == 8
    assert end_b["param_schedulers"] == end_a["param_schedulers"]
    # Momentum buffers carried over: the weights after the resumed steps match the straight run.
    for key, value in end_a["state_dict"].items():
        torch.testing.assert_close(end_b["state_dict"][key], value, rtol=1e-3, atol=1e-4, msg=key)


def test_sigterm_preempts_with_a_checkpoint_and_a_clean_exit_then_resumes(tmp_path, shapes_root):
    work = tmp_path / "run"
    hparams = [*SMALL, "pretrained=false"]
    command = trial_command(
        EXPERIMENTS_DIR / "retinanet.yaml",
        work,
        data=str(shapes_root),
        max_iters=200,
        hparams=hparams,
    )
    proc = subprocess.Popen(command, cwd=tmp_path, start_new_session=True)
    interrupt_after_first_report(proc, work, signal.SIGTERM)
    result = json.loads((work / "result.json").read_text())
    assert result["preempted"] and 2 <= result["steps"] < 200
    meta = json.loads((work / "checkpoints" / result["checkpoint"] / "metadata.json").read_text())
    assert meta["steps_completed"] == result["steps"]

    target = result["steps"] + 2
    resume = trial_command(
        EXPERIMENTS_DIR / "retinanet.yaml",
        work,
        data=str(shapes_root),
        max_iters=target,
        hparams=hparams,
        resume=True,
    )
    subprocess.run(resume, cwd=tmp_path, check=True)
    again = json.loads((work / "result.json").read_text())
    assert again["steps"] == target and not again["preempted"]


def test_ctrl_c_to_invoke_train_checkpoints_exits_0_and_resume_continues(tmp_path, shapes_root):
    """SIGINT reaches `invoke train` only (as a terminal's Ctrl-C would after it forwards it): the
    trial checkpoints, nothing is left running, and --resume continues after that checkpoint."""
    work = tmp_path / "w"
    base = [
        sys.executable, "-m", "invoke", "-r", str(REPO), "train", "retinanet",
        "--data", str(shapes_root), "--work-dir", str(work),
        *[arg for item in SMALL for arg in ("--hparam", item)],
    ]  # fmt: skip
    proc = subprocess.Popen([*base, "--max-iters", "200"], cwd=tmp_path, start_new_session=True)
    interrupt_after_first_report(proc, work, signal.SIGINT)
    result = json.loads((work / "result.json").read_text())
    assert result["preempted"] and 2 <= result["steps"] < 200
    assert checkpoint_problem(work / "checkpoints" / result["checkpoint"]) is None
    assert not list((work / "checkpoints").rglob("*.incomplete"))
    leftover = subprocess.run(["pgrep", "-f", str(work)], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", "the trial was orphaned"

    target = result["steps"] + 2
    subprocess.run([*base, "--max-iters", str(target), "--resume"], cwd=tmp_path, check=True)
    again = json.loads((work / "result.json").read_text())
    assert again["steps"] == target and not again["preempted"]
