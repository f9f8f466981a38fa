"""A local run as the user drives it: explicit options beat the CPU profile, signals reach the
trial, and --resume takes the newest checkpoint that is complete."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

from common import REPO_ROOT as REPO
from errors import ConfigError
from trial.runtime.workdir import latest_local_checkpoint, resume_checkpoint
from trial.settings.local_profile import LOCAL_HPARAMS
from trial.verbs.local import LocalTrain, local_config


@pytest.mark.parametrize(
    ("option", "value"),
    [("sets", "optim_wrapper.optimizer.lr=0.001"), ("hparams", "optim_wrapper.optimizer.lr=0.001")],
)
def test_an_explicit_lr_wins_over_the_local_profile(tmp_path, option, value):
    cfg = local_config(LocalTrain(model="retinanet", work_dir=str(tmp_path), **{option: [value]}))
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.type == LOCAL_HPARAMS["optim_wrapper.optimizer"]["type"]
    assert optimizer.lr == 0.001
    assert optimizer.weight_decay == LOCAL_HPARAMS["optim_wrapper.optimizer"]["weight_decay"]


def test_a_whole_optimizer_from_set_replaces_the_profiles(tmp_path):
    cfg = local_config(
        LocalTrain(
            model="retinanet",
            work_dir=str(tmp_path),
            sets=["optim_wrapper.optimizer={type: SGD, lr: 0.02, momentum: 0.9}"],
        )
    )
    assert dict(cfg.optim_wrapper.optimizer) == {"type": "SGD", "lr": 0.02, "momentum": 0.9}


@pytest.mark.parametrize("inside", ["trial", "trial/run", "docs/w", ".", ".."])
def test_no_work_dir_inside_the_repository_or_above_it(inside):
    """`--work-dir trial` from the repository root wrote the run into the trial/ package; only
    the root and its parents were refused (issue 29, W1)."""
    with pytest.raises(
        ConfigError, match=r"^--work-dir .* (lies inside|would hold) the repository"
    ):
        local_config(LocalTrain(model="retinanet", work_dir=str(REPO / inside)))
    assert not (REPO / "trial" / "run").exists()


def test_work_dirs_is_the_repositorys_one_place_for_runs():
    """The default work dir from the repository root is ./work_dirs/MODEL (git ignores it)."""
    local_config(LocalTrain(model="retinanet", work_dir=str(REPO / "work_dirs" / "retinanet-w1")))


def fake_checkpoint(storage: Path, name: str, steps: int, *, payload: bytes = b"x" * 4096) -> Path:
    folder = storage / name
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "checkpoint.pth", "w") as archive:  # torch.save's container
        archive.writestr("archive/data.pkl", payload)
    (folder / "metadata.json").write_text(json.dumps({"steps_completed": steps}))
    return folder


def test_resume_skips_a_truncated_newest_checkpoint(tmp_path):
    fake_checkpoint(tmp_path, "old", 4)
    newest = fake_checkpoint(tmp_path, "new", 8)
    data = (newest / "checkpoint.pth").read_bytes()
    (newest / "checkpoint.pth").write_bytes(data[: len(data) // 2])
    fake_checkpoint(tmp_path, "partial", 12).joinpath("metadata.json").unlink()  # mid-write
    assert latest_local_checkpoint(tmp_path) == "old"


def test_resume_without_a_usable_checkpoint_says_why(tmp_path):
    with pytest.raises(ConfigError, match=r"no valid checkpoint in .* \(there are none\)"):
        resume_checkpoint(tmp_path / "checkpoints")
    broken = fake_checkpoint(tmp_path / "checkpoints", "a", 4)
    (broken / "checkpoint.pth").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ConfigError, match=r"\(1 found, none complete and readable\); run without"):
        resume_checkpoint(tmp_path / "checkpoints")


# A child that checkpoints on SIGTERM/SIGINT and exits 7, so the parent's exit code is visibly its.
CHILD = """
import signal, sys, time, pathlib
out = pathlib.Path(sys.argv[1])
def stop(signum, frame):
    out.write_text(signal.Signals(signum).name)
    sys.exit(7)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
out.with_suffix(".ready").write_text("")
time.sleep(60)
"""
PARENT = """
import sys
from trial.runtime.ranks import run_forwarding_signals
sys.exit(run_forwarding_signals([sys.executable, "-c", sys.argv[1], sys.argv[2]]))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_are_forwarded_and_the_childs_exit_code_is_kept(tmp_path, sig):
    out = tmp_path / "got"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    parent = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(PARENT), textwrap.dedent(CHILD), str(out)], env=env
    )
    deadline = time.monotonic() + 30
    while not out.with_suffix(".ready").exists():
        assert time.monotonic() < deadline and parent.poll() is None
        time.sleep(0.05)
    parent.send_signal(sig)
    assert parent.wait(timeout=30) == 7
    assert out.read_text() == sig.name  # the child got the signal: not orphaned, not killed
