"""`invoke train` as a user types it: bad input is one clear line on stderr and exit code 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from common import REPO_ROOT as REPO


def invoke(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "invoke", "-r", str(REPO), *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["train", "nosuchmodel"],
            "error: unknown model 'nosuchmodel'; choose one of retinanet, maskrcnn, gfl",
        ),
        (
            ["train", "retinanet", "--set", "optim_wrapper.optimizer.lrr=0.1"],
            "did you mean 'optim_wrapper.optimizer.lr'?",
        ),
        (
            ["train", "gfl", "--data", "NOTCOCO"],
            "is not COCO-shaped: missing annotations/instances_train2017.json",
        ),
        (["train", "retinanet", "--set", "lr0.1"], "--set 'lr0.1' is not key=value"),
        (["train", "retinanet", "--set", "a=["], "'a=[': the value is not valid YAML"),
        (
            ["train", "retinanet", "--hparam", "global_batch_size=abc"],
            "global_batch_size must be a positive whole number of images, got 'abc'",
        ),
        (["train", "retinanet", "--resume"], "--resume: no valid checkpoint in"),
        (["train", "retinanet", "--dry-run"], "--dry-run only goes with --cluster"),
        (["bench", "nosuch"], "error: unknown benchmark 'nosuch'"),
        (["bench", "trial", "--scale", "0.5"], "--scale applies to the startup benchmark only"),
    ],
    ids=[
        "model",
        "set-key",
        "data",
        "set-syntax",
        "set-yaml",
        "hparam-type",
        "resume",
        "dry-run",
        "bench",
        "bench-scale",
    ],
)
def test_bad_input_is_one_line_and_exit_1(tmp_path, args, message):
    (tmp_path / "NOTCOCO").mkdir()
    proc = (
        invoke(*args, "--work-dir", str(tmp_path / "w"), cwd=tmp_path)
        if args[0] == "train"
        else invoke(*args, cwd=tmp_path)
    )
    assert proc.returncode == 1, proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "w" / "run").exists()  # nothing started


def test_list_and_help_read_well(tmp_path):
    listing = invoke("--list", cwd=tmp_path).stdout
    for verb in ("build-image", "test-image", "stage-coco", "train", "smoke", "bench"):
        assert verb in listing
    helptext = invoke("--help", "train", cwd=tmp_path).stdout
    for option in (
        "--cluster",
        "--data",
        "--max-iters",
        "--work-dir",
        "--config",
        "--set",
        "--resume",
    ):
        assert option in helptext
