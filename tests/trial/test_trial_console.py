"""What a person sees of a local run: progress and a summary on the terminal, the rest in train.log.

The fast tests drive trial/ui/console.py in a child process whose stdout is a real pseudo-terminal
(python's pty module) or a pipe; the slow ones run ``invoke train`` itself the same two ways.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from common import REPO_ROOT as REPO
from trial.ui.console import Console, ConsoleLogHandler, metrics_text, summary

INVOKE = Path(sys.executable).with_name("invoke")


def run_on_terminal(command: list[str], *, cwd: Path, env: dict, timeout: float) -> tuple[int, str]:
    """Run ``command`` with stdin/stdout/stderr on a fresh 24x100 pseudo-terminal; (exit code,
    output)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        command, cwd=cwd, env=env, stdin=follower, stdout=follower, stderr=follower, close_fds=True
    )
    os.close(follower)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other side is closed, the child is gone
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    else:
        proc.kill()
    os.close(leader)
    return proc.wait(timeout=30), b"".join(chunks).decode("utf-8", "replace")


def terminal_lines(output: str) -> list[str]:
    """The lines a person sees: a bar redrawn with carriage returns is one line."""
    return [line.rsplit("\r", 1)[-1] for line in output.replace("\r\n", "\n").split("\n") if line]


def child_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    return {**env, "PYTHONPATH": str(REPO), **extra}


# A trial-like child: noise on every channel (print, a raw fd write, a Python warning, a library's
# INFO log), one warning logged twice, a progress line.
NOISY_CHILD = """
import logging, os, sys, warnings
from trial.ui.console import captured_output
logging.basicConfig(level=logging.INFO)
with captured_output(sys.argv[1]) as console:
    print("Config:\\n" + "x = 1\\n" * 300)
    os.write(1, b"pycocotools: Loading and preparing results...\\n")
    warnings.warn("pkg_resources is deprecated as an API")
    logging.getLogger("determined.core").info("report_training_metrics({...})")
    for _ in range(2):
        logging.getLogger("trial").warning("the same warning")
    console.line("progress line")
print("after")
"""


@pytest.mark.parametrize("terminal", [True, False], ids=["pty", "pipe"])
def test_the_terminal_gets_progress_and_warnings_once_the_log_gets_the_rest(tmp_path, terminal):
    log = tmp_path / "train.log"
    command = [sys.executable, "-c", NOISY_CHILD, str(log)]
    if terminal:
        code, output = run_on_terminal(command, cwd=tmp_path, env=child_env(), timeout=60)
    else:
        done = subprocess.run(
            command, cwd=tmp_path, env=child_env(), capture_output=True, text=True
        )
        code, output = done.returncode, done.stdout + done.stderr
    assert code == 0, output
    assert terminal_lines(output) == ["warning: the same warning", "progress line", "after"]
    text = log.read_text()
    for noise in ("x = 1", "pycocotools", "pkg_resources", "report_training_metrics"):
        assert noise in text


CRASHING_CHILD = """
import sys
from errors import ProjectError
from trial.ui.console import captured_output
try:
    with captured_output(sys.argv[1]):
        print("noise")
        raise RuntimeError("CUDA out of memory\\nin a very long\\nmessage")
except ProjectError as err:  # what python -m trial does with it
    print(f"error: {err}", file=sys.stderr)
    sys.exit(1)
"""


def test_a_crash_is_one_line_on_the_terminal_and_its_traceback_is_in_the_log(tmp_path):
    log = tmp_path / "train.log"
    done = subprocess.run(
        [sys.executable, "-c", CRASHING_CHILD, str(log)],
        cwd=tmp_path, env=child_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "error: training failed: RuntimeError: CUDA out of memory in a very long message "
        f"(traceback in {log})"
    ]
    assert "Traceback (most recent call last)" in log.read_text()
    assert "noise" in log.read_text()


def test_warnings_show_once_and_errors_as_one_line(tmp_path):
    out = tmp_path / "console.txt"
    with out.open("w") as stream:
        logger = logging.getLogger("test-console")
        logger.propagate = False
        logger.addHandler(ConsoleLogHandler(Console(stream, interactive=False)))
        logger.info("not shown")
        logger.warning("disk %s", "low")
        logger.warning("disk %s", "low")
        logger.error("boom\nsecond line")
    assert out.read_text().splitlines() == ["warning: disk low", "error: boom second line"]


def test_the_summary_names_the_model_time_map_and_the_files_that_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "work_dirs" / "retinanet"
    (work / "tensorboard").mkdir(parents=True)
    for name in ("result.json", "curves.png", "predictions.png", "train.log"):
        (work / name).write_text("x")
    result = {
        "steps": 200,
        "preempted": False,
        "validation": {"bbox_mAP": 0.4123, "bbox_mAP_50": 0.7},
    }
    text = summary(result, model="retinanet", work_dir=work, seconds=185)
    assert text.splitlines() == [
        "retinanet finished: 200 iterations in 3 min 05 s",
        "  bbox_mAP 0.412  bbox_mAP_50 0.700",
        "  result       work_dirs/retinanet/result.json",
        "  curves       work_dirs/retinanet/curves.png",
        "  predictions  work_dirs/retinanet/predictions.png",
        "  tensorboard  work_dirs/retinanet/tensorboard",
        "  log          work_dirs/retinanet/train.log",
    ]
    (work / "predictions.png").unlink()
    preempted = summary({**result, "preempted": True}, model="gfl", work_dir=work, seconds=3)
    assert preempted.splitlines()[0] == "gfl preempted: 200 iterations in 3 s"
    assert "predictions" not in preempted
    assert preempted.splitlines()[-1] == "  continue with the same command plus --resume"


def test_metrics_text_reads_mmengine_and_trial_keys():
    assert metrics_text({"coco/bbox_mAP": 0.5, "coco/segm_mAP": 0.25, "lr": 1}) == (
        "bbox_mAP 0.500  segm_mAP 0.250"
    )
    assert metrics_text({}) == "no mAP (no validation metrics)"


def test_no_detections_is_zero_map_without_an_error_from_pycocotools(shapes_root):
    """Before: pycocotools' loadRes([]) raised IndexError and mmdet logged ERROR on a normal run."""
    import numpy as np
    from mmengine.logging import MMLogger

    from trial.engine.metrics import ZeroSafeCocoMetric

    ann = shapes_root / "annotations" / "instances_val2017.json"
    coco = json.loads(ann.read_text())
    metric = ZeroSafeCocoMetric(ann_file=str(ann), metric="bbox")
    metric.dataset_meta = {"classes": [c["name"] for c in coco["categories"]]}
    empty = {
        "img_id": coco["images"][0]["id"],
        "bboxes": np.zeros((0, 4)),
        "scores": np.zeros(0),
        "labels": np.zeros(0, dtype=int),
    }
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        metrics = metric.compute_metrics([({}, empty)])
    finally:
        logger.removeHandler(handler)
    assert metrics["bbox_mAP"] == 0.0
    assert [r.levelname for r in records if r.levelno >= logging.ERROR] == []


def test_the_predictions_picture_shows_ground_truth_and_predictions(shapes_root, tmp_path):
    import numpy as np
    import torch
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    from PIL import Image

    from trial.ui.preview import ROW_WIDTH, draw_predictions

    images = sorted((shapes_root / "val2017").iterdir())[:2]
    samples = []
    for path in images:
        sample = DetDataSample(metainfo={"img_path": str(path)})
        box = torch.tensor([[40.0, 40.0, 120.0, 120.0]])
        sample.gt_instances = InstanceData(bboxes=box, labels=torch.tensor([0]))
        sample.pred_instances = InstanceData(
            bboxes=box, labels=torch.tensor([0]), scores=torch.tensor([0.9])
        )
        samples.append(sample)
    out = draw_predictions(samples, tmp_path / "predictions.png", meta={"classes": ("a", "b")})
    picture = np.asarray(Image.open(out))
    width = Image.open(images[0]).width
    assert picture.shape[1] == ROW_WIDTH
    assert picture.shape[0] == 2 * ROW_WIDTH // 2  # two rows, each gt|pred: twice as wide as high
    assert not list(tmp_path.glob("*.incomplete"))
    assert width == 256


@pytest.mark.slow
@pytest.mark.training
def test_invoke_train_on_a_terminal_prints_a_short_run_and_its_summary(tmp_path, coco_sample):
    """4 iterations of RetinaNet on the COCO sample, on a pseudo-terminal (4.5 min measured at
    load 12, the 2-core VM shared by seven jobs; an idle machine is not measured)."""
    work = tmp_path / "work"
    command = [str(INVOKE), "train", "retinanet", "--data", str(coco_sample), "--max-iters", "4",
               "--work-dir", str(work)]  # fmt: skip
    code, output = run_on_terminal(command, cwd=REPO, env=child_env(), timeout=600)
    lines = terminal_lines(output)
    assert code == 0, output
    assert len(lines) <= 40, output
    assert "Traceback" not in output and "Config:" not in output and "pkg_resources" not in output
    assert "report_training_metrics" not in output and " - ERROR - " not in output
    assert any(line.startswith("train") and "4/4" in line for line in lines), output
    header = next(i for i, line in enumerate(lines) if line.startswith("retinanet finished: 4 "))
    assert lines[header + 1].strip().startswith("bbox_mAP ")
    for name in ("result.json", "curves.png", "predictions.png", "tensorboard", "train.log"):
        assert any(line.rstrip().endswith(name) for line in lines[header:]), (name, output)
    assert (work / "predictions.png").stat().st_size > 0
    log = (work / "train.log").read_text()
    assert "Config:" in log and "report_training_metrics" in log


@pytest.mark.slow
@pytest.mark.training
def test_invoke_train_without_a_terminal_prints_plain_lines(tmp_path, coco_sample):
    """The same run with output to a pipe (CI): no bar redraws, one line per logged iteration and
    per validation (4.5 min measured at load 12)."""
    work = tmp_path / "work"
    done = subprocess.run(
        [str(INVOKE), "train", "retinanet", "--data", str(coco_sample), "--max-iters", "4",
         "--work-dir", str(work), "--hparam", "log_interval=2"],
        cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "\r" not in output
    lines = output.splitlines()
    assert [line.split("  ")[0] for line in lines if line.startswith("train ")] == [
        "train 2/4",
        "train 4/4",
    ], output
    assert sum(line.startswith("val ") for line in lines) == 1, output
    header = next(i for i, line in enumerate(lines) if line.startswith("retinanet finished: 4 "))
    assert lines[header + 1].startswith("  bbox_mAP "), output
    assert lines[-1].startswith("  log ") and lines[-1].endswith("train.log"), output


class ToyRunner:
    """What ProgressHook reads of a Runner: iter, max_iters, the message hub, logger, val loader."""

    def __init__(self, max_iters: int) -> None:
        from mmengine.logging import MessageHub, MMLogger

        self.iter = 0
        self.max_iters = max_iters
        self.message_hub = MessageHub.get_instance(f"toy-{id(self)}")
        self.logger = MMLogger.get_instance(f"toy-{id(self)}")
        self.val_dataloader = [None] * 3


def drive(hook, runner, *, val_every: int) -> None:
    """The hook calls of an IterBasedTrainLoop with a validation every ``val_every`` iterations."""
    hook.before_run(runner)
    hook.before_train(runner)
    while runner.iter < runner.max_iters:
        runner.message_hub.update_scalar("train/loss", 1.0 / (runner.iter + 1))
        hook.after_train_iter(runner, runner.iter)
        runner.iter += 1
        if runner.iter % val_every == 0:
            hook.before_val_epoch(runner)
            for index in range(len(runner.val_dataloader)):
                hook.after_val_iter(runner, index)
            hook.after_val_epoch(runner, {"coco/bbox_mAP": runner.iter / 10})
    hook.after_train(runner)
    hook.after_run(runner)


@pytest.mark.parametrize("interactive", [False, True], ids=["plain", "bars"])
def test_progress_is_one_line_per_phase(interactive):
    import io

    from trial.ui.progress import ProgressHook

    stream = io.StringIO()
    drive(
        ProgressHook(Console(stream, interactive=interactive), interval=2),
        ToyRunner(4),
        val_every=2,
    )
    lines = terminal_lines(stream.getvalue())
    assert "\x1b[A" not in stream.getvalue()  # never two bars at once (no cursor-up redraws)
    if interactive:
        assert [line.split()[0] for line in lines] == ["train", "val", "train", "val"]
        assert "2/4" in lines[0] and "4/4" in lines[2] and "loss 0.292" in lines[2]
    else:
        assert [line.split(" eta ")[0] for line in lines] == [
            "train 2/4  loss 0.7500 ",
            "val   at iteration 2: bbox_mAP 0.200",
            "train 4/4  loss 0.2917 ",
            "val   at iteration 4: bbox_mAP 0.400",
        ]


def test_verbose_keeps_the_terminal_and_other_ranks_log_to_their_own_file(tmp_path, monkeypatch):
    from trial.ui.console import local_session
    from trial.verbs.local import trial_command

    assert trial_command("exp.yaml", tmp_path, verbose=True)[-1] == "--verbose"
    with local_session(tmp_path, verbose=True) as console:
        assert console is None
    assert not (tmp_path / "train.log").exists()
    monkeypatch.setenv("RANK", "1")
    with local_session(tmp_path, verbose=False) as console:
        assert console is None
        os.write(1, b"rank 1 says hello\n")  # (pytest captures sys.stdout, not fd 1)
    assert "rank 1 says hello" in (tmp_path / "train-rank1.log").read_text()


def test_bars_only_on_a_terminal_and_never_in_ci(monkeypatch, tmp_path):
    from trial.ui.console import is_interactive

    leader, follower = pty.openpty()
    with os.fdopen(follower, "w") as terminal, (tmp_path / "f").open("w") as file:
        monkeypatch.delenv("CI", raising=False)
        assert is_interactive(terminal) and not is_interactive(file)
        monkeypatch.setenv("CI", "true")
        assert not is_interactive(terminal)
    os.close(leader)
