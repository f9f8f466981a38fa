"""What every verb in tasks.py owes its user, whichever verb it is (issue 29): options that invoke
itself would parse (and crash on), output cut short by a closed pipe, library noise."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common import REPO_ROOT as REPO


def invoke(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "invoke", "-r", str(REPO), *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, **kwargs)


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def task_parameters():
    import tasks

    for name, value in vars(tasks).items():
        body = getattr(value, "body", None)
        if body is None or not callable(body):
            continue
        for param in list(inspect.signature(body).parameters.values())[1:]:
            yield name, param


def test_no_task_lets_invoke_convert_a_number():
    """invoke turns an option whose default is an int or a float into int(text)/float(text)
    itself, before the task runs: `--scale abc` was a 20-line ValueError traceback, and `--help`
    showed a float option as a switch. Numbers are taken as text and checked by the task."""
    typed = [
        f"{name} --{param.name.rstrip('_').replace('_', '-')}"
        for name, param in task_parameters()
        if type(param.default) in (int, float)
    ]
    assert typed == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bench", "startup", "--scale", "abc"], "--scale 'abc' must be a positive number"),
        (["bench", "startup", "--scale", "-1"], "--scale '-1' must be a positive number"),
        (["bench", "startup", "--scale", "0"], "--scale '0' must be a positive number"),
        (["bench", "startup", "--scale", "nan"], "--scale 'nan' must be a positive number"),
        (["cluster", "status", "--agents", "abc"], "--agents 'abc' must be a positive whole"),
        (["cluster", "status", "--master-port", "0"], "--master-port '0' must be a positive"),
    ],
    ids=["scale-text", "scale-negative", "scale-zero", "scale-nan", "agents", "port"],
)
def test_numbers_are_one_line_before_anything_runs(tmp_path, args, message):
    proc = invoke(*args, cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = error_lines(proc)
    assert len(lines) == 1 and message in lines[0], proc.stderr[-3000:]


def test_bench_help_shows_scale_takes_a_value(tmp_path):
    helptext = invoke("--help", "bench", cwd=tmp_path).stdout
    assert "--scale=STRING" in helptext


PIPED = {
    "build-image": ["build-image", "--all", "--dry-run"],
    "stage-coco": ["stage-coco", "--source", "SRC", "--cache", "CACHE", "--dest", "DEST",
                   "--dry-run", "--with-images"],
}  # fmt: skip


@pytest.mark.parametrize("verb", PIPED)
def test_a_reader_that_stops_early_ends_the_verb_quietly(tmp_path, coco_sample, verb):
    """`invoke ... | head -1`: the reader closes the pipe before the verb has written; the verb
    exits 0 without a BrokenPipeError traceback (on stderr or at interpreter exit)."""
    args = [
        {"SRC": str(coco_sample), "CACHE": str(tmp_path / "c"), "DEST": str(tmp_path / "d")}.get(
            a, a
        )
        for a in PIPED[verb]
    ]
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written: every write is EPIPE
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "invoke", "-r", str(REPO), *args],
            cwd=tmp_path, stdout=write, stderr=subprocess.PIPE, text=True, timeout=300,
        )  # fmt: skip
    finally:
        os.close(write)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "BrokenPipe" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


# What libraries print that nobody running a verb can act on (issue 29, C4).
NOISE = (
    "UserWarning", "DeprecationWarning", "FutureWarning", "pkg_resources", "OMP_NUM_THREADS",
    "out of bounds", "Loads checkpoint", "loading annotations into memory", "Preparing files",
)  # fmt: skip


def assert_quiet(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert [n for n in NOISE if n in output] == [], output[-3000:]


@pytest.fixture(scope="module")
def untrained_export(tmp_path_factory, coco_sample) -> Path:
    """An export of an untrained RetinaNet whose every box is kept (score_thr 0): random boxes,
    many of them past the image border."""
    import json as json_
    import warnings

    import torch
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from trial.verbs.artifact import standalone_config
    from trial.verbs.local import LocalTrain, local_config

    out = tmp_path_factory.mktemp("export")
    cfg = local_config(LocalTrain(model="retinanet", work_dir=str(out / "w"), data=str(coco_sample),
                                  sets=["model.test_cfg.score_thr=0.0"]))  # fmt: skip
    doc = json_.loads((coco_sample / "annotations" / "instances_val2017.json").read_text())
    classes = [c["name"] for c in sorted(doc["categories"], key=lambda c: c["id"])]
    palette = [(220, 20, 60)] * len(classes)
    Config(standalone_config(cfg, classes=classes, palette=palette)).dump(str(out / "config.py"))
    with warnings.catch_warnings(), DefaultScope.overwrite_default_scope("mmdet"):
        warnings.simplefilter("ignore")
        model = MODELS.build(cfg.model)
    meta = {"dataset_meta": {"classes": classes, "palette": palette}}
    torch.save({"state_dict": model.state_dict(), "meta": meta}, out / "model.pth")
    return out


def test_predict_and_eval_print_their_results_not_library_notices(
    tmp_path, coco_sample, untrained_export
):
    images = coco_sample / "val2017"
    predict = invoke("predict", str(untrained_export), str(images), "--out", "p", "--score-thr",
                     "0", cwd=tmp_path)  # fmt: skip
    assert_quiet(predict)
    assert " detections on " in predict.stdout
    evaluate = invoke("eval", str(untrained_export), "--data", str(coco_sample), cwd=tmp_path)
    assert_quiet(evaluate)
    assert "bbox_mAP" in evaluate.stdout


def test_a_cluster_dry_run_prints_the_experiment_not_library_notices(tmp_path):
    assert_quiet(invoke("train", "retinanet", "--cluster", "--dry-run", "--registry", "r.io",
                        cwd=tmp_path))  # fmt: skip
