"""Every verb's options and the trial's inputs as a user types them: a mistake is one line naming
the option or file, exit code non-zero, no traceback, nothing started or changed (issue 17)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from inputs_helpers import coco_variant, error_lines

from common import REPO_ROOT as REPO


def invoke(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "invoke", "-r", str(REPO), *args]
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=300, env=env or os.environ.copy()
    )


def assert_one_line(proc: subprocess.CompletedProcess, message: str, *, code: int = 1) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == code, proc.stderr[-3000:]
    lines = error_lines(proc)
    assert len(lines) == 1 and message in lines[0], proc.stderr[-3000:]
    return lines[0]


TRAIN_CASES = {
    "max-iters-0": (["--max-iters", "0"], "--max-iters '0' must be a positive whole number"),
    "max-iters-negative": (["--max-iters", "-3"], "--max-iters '-3' must be a positive whole"),
    "max-iters-text": (["--max-iters", "abc"], "--max-iters 'abc' must be a positive whole"),
    "nproc-text": (["--nproc", "abc"], "--nproc 'abc' must be a positive whole number"),
    "hparam-length-text": (
        ["--hparam", "max_iters=abc"],
        "hyperparameters.max_iters must be a positive whole number of batches, got 'abc'",
    ),
    "hparam-not-key-value": (["--hparam", "foo"], "--hparam 'foo' is not key=value"),
    "hparam-typo": (
        ["--hparam", "global_batch_sise=8"],
        "unknown hyperparameter 'global_batch_sise'; did you mean 'global_batch_size'?",
    ),
    "set-of-a-trial-hparam": (
        ["--set", "max_iters=5"],
        "--set max_iters: max_iters is a trial hyperparameter, not an mmengine config key; "
        "pass --hparam max_iters=5",
    ),
    "log-interval-0": (
        ["--hparam", "log_interval=0"],
        "hyperparameters.log_interval must be a positive whole number of batches, got 0",
    ),
    "pretrained-not-bool": (
        ["--hparam", "pretrained=maybe"],
        "hyperparameters.pretrained must be true or false, got 'maybe'",
    ),
    "set-arg-typo": (
        ["--set", "default_hooks.logger.log_metric_by_epoc=False"],
        "did you mean 'default_hooks.logger.log_metric_by_epoch'?",
    ),
    "set-component-typo": (
        ["--set", "optim_wrapper.optimizer={type: SGD, lrr: 0.1}"],
        "'optim_wrapper.optimizer': SGD takes no argument 'lrr'; did you mean 'lr'?",
    ),
    "resume-and-fresh": (["--resume", "--fresh"], "--resume and --fresh exclude each other"),
    "cluster-with-local-options": (
        ["--cluster", "--data", "x", "--nproc", "2"],
        "--data, --nproc only go with a local run (drop --cluster)",
    ),
    "local-with-registry": (["--registry", "ghcr.io/acme"], "--registry only goes with --cluster"),
    # issue 29: a value that another flag overrides is checked all the same (W8), a default
    # that does not fit says how to set it (C8), and MODEL is the one model that runs (W4)
    "hparam-length-hidden-by-max-iters": (
        ["--max-iters", "2", "--hparam", "max_iters=abc"],
        "hyperparameters.max_iters must be a positive whole number of batches, got 'abc'",
    ),
    "nproc-vs-default-batch": (
        ["--nproc", "3"],
        "global_batch_size 8 must be a positive multiple of the 3 slots; pass e.g. --hparam "
        "global_batch_size=9",
    ),
    "hparam-model-contradicts-model": (
        ["--hparam", "model=gfl"],
        "--hparam model=gfl contradicts MODEL retinanet: MODEL is the model that trains",
    ),
}


@pytest.mark.parametrize(("args", "message"), TRAIN_CASES.values(), ids=TRAIN_CASES.keys())
def test_train_options(tmp_path, args, message):
    work = [] if "--cluster" in args else ["--work-dir", str(tmp_path / "w")]
    proc = invoke("train", "retinanet", *work, *args, cwd=tmp_path)
    assert_one_line(proc, message)
    assert not (tmp_path / "w").exists()  # nothing written before the checks passed


CLUSTER_CASES = {
    # the same checks of the trial's own hyperparameters as a local run (issue 17, item 3)
    "set-typo": (["--set", "optim_wrapper.optimizer.lrr=0.1"], "did you mean 'optim_wrapper.optimizer.lr'?"),
    "batch-vs-slots": (
        ["--hparam", "global_batch_size=12"],
        "hyperparameters.global_batch_size 12 must be a positive multiple of the 8 slots",
    ),
    "hparam-typo": (["--hparam", "max_iter=5"], "unknown hyperparameter 'max_iter'; did you mean 'max_iters'?"),
    "max-iters-0": (["--max-iters", "0"], "--max-iters '0' must be a positive whole number"),
    "hparam-length-hidden-by-max-iters": (["--max-iters", "2", "--hparam", "max_iters=abc"], "hyperparameters.max_iters must be a positive whole number of batches, got 'abc'"),
    "hparam-model-contradicts-model": (["--hparam", "model=gfl"], "--hparam model=gfl contradicts MODEL retinanet"),
    "no-registry": (
        [],
        "environment.image.cuda 'mmdet-determined:mmdet3.3.0-mmcv2.1.0-torch2.1.2-cu121-py3.10' "
        "has no registry: a cluster cannot pull it; pass --registry R",
    ),
}  # fmt: skip


@pytest.mark.parametrize(("args", "message"), CLUSTER_CASES.values(), ids=CLUSTER_CASES.keys())
def test_cluster_dry_run_checks_what_a_local_run_checks(tmp_path, args, message):
    registry = ["--registry", "ghcr.io/acme"] if args else []  # the no-registry case has none
    proc = invoke("train", "retinanet", "--cluster", "--dry-run", *registry, *args, cwd=tmp_path)
    assert_one_line(proc, message)


DATA_SECTION_CASES = {
    # what the startup hook would refuse on the cluster, refused by the offline check (issue 29, W5)
    "subset-negative": ({"subset": -1}, "data.subset=-1 must be null or a positive number of images"),
    "unknown-split": ({"splits": ["test"]}, "data.splits has unknown split 'test'; allowed: train, val"),
    "typo": ({"sourc": "gs://b/coco"}, "data.sourc is not a known field; allowed: "),
    "no-section": (None, "data must be a mapping with source/cache/dest, got None"),
}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"), DATA_SECTION_CASES.values(), ids=DATA_SECTION_CASES.keys()
)
def test_cluster_dry_run_checks_the_data_section_as_the_startup_hook_does(
    tmp_path, change, message
):
    import yaml

    experiment = yaml.safe_load((REPO / "experiments" / "retinanet.yaml").read_text())
    if change is None:
        del experiment["data"]
    else:
        experiment["data"].update(change)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(experiment))
    proc = invoke("train", "retinanet", "--cluster", "--dry-run", "--registry", "ghcr.io/acme",
                  "--experiment", str(path), cwd=tmp_path)  # fmt: skip
    assert_one_line(proc, message)


EXPERIMENT_CASES = {
    # the experiment's own hyperparameters are checked even where the CPU profile replaces
    # them locally (issue 29, W6)
    "hparam-typo-under-the-profile": (
        {"optim_wrapper.optimizer.lrr": 0.1},
        "did you mean 'optim_wrapper.optimizer.lr'?",
    ),
    "bad-length-under-max-iters": (
        {"max_iters": "abc"},
        "hyperparameters.max_iters must be a positive whole number",
    ),
    # MODEL and the experiment's model disagree: one truth, both ways (issue 29, C6)
    "model-contradicts-experiment": (
        {"model": "gfl"},
        "MODEL retinanet contradicts hyperparameters.model 'gfl' of ",
    ),
}


@pytest.mark.parametrize("cluster", [False, True], ids=["local", "cluster"])
@pytest.mark.parametrize(
    ("change", "message"), EXPERIMENT_CASES.values(), ids=EXPERIMENT_CASES.keys()
)
def test_the_experiments_own_hyperparameters_are_checked(tmp_path, cluster, change, message):
    import yaml

    experiment = yaml.safe_load((REPO / "experiments" / "retinanet.yaml").read_text())
    experiment["hyperparameters"].update(change)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(experiment))
    mode = ["--cluster", "--dry-run", "--registry", "r.io"] if cluster else ["--work-dir", "w"]
    proc = invoke("train", "retinanet", "--experiment", str(path), "--max-iters", "2", *mode,
                  cwd=tmp_path)  # fmt: skip
    assert_one_line(proc, message)
    assert not (tmp_path / "w").exists()


def test_cluster_dry_run_carries_hparam_set_max_iters_and_the_built_image(tmp_path):
    proc = invoke(
        "train", "retinanet", "--cluster", "--dry-run", "--registry", "ghcr.io/acme",
        "--hparam", "global_batch_size=32", "--set", "optim_wrapper.optimizer.lr=0.02",
        "--max-iters", "500", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    import yaml

    text = proc.stdout.split("# experiment", 1)[1].split("\n", 1)[1].split("# context")[0]
    experiment = yaml.safe_load(text)
    hparams = experiment["hyperparameters"]
    assert hparams["global_batch_size"] == 32
    assert hparams["optim_wrapper.optimizer.lr"] == 0.02
    assert hparams["max_iters"] == 500
    assert experiment["environment"]["image"]["cuda"] == (
        "ghcr.io/acme/mmdet-determined:mmdet3.3.0-mmcv2.1.0-torch2.1.2-cu121-py3.10"
    )


def test_set_accepts_arguments_of_the_registered_type_that_the_config_leaves_out(tmp_path):
    from trial.verbs.local import LocalTrain, local_config

    cfg = local_config(
        LocalTrain(
            model="retinanet",
            work_dir=str(tmp_path / "w"),
            sets=[
                "val_dataloader.dataset.indices=4",
                "default_hooks.logger.log_metric_by_epoch=True",
            ],
        )
    )
    assert cfg.val_dataloader.dataset.indices == 4  # CocoDataset -> mmengine BaseDataset(indices)
    assert cfg.default_hooks.logger.log_metric_by_epoch is True


def test_validation_scalars_are_logged_at_their_iteration_by_default(tmp_path):
    from trial.verbs.local import LocalTrain, local_config

    cfg = local_config(LocalTrain(model="retinanet", work_dir=str(tmp_path / "w")))
    assert cfg.default_hooks.logger.log_metric_by_epoch is False


def test_config_file_with_a_syntax_error(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'\nmodel = dict(\n")
    proc = invoke(
        "train", "retinanet", "--config", str(bad), "--work-dir", str(tmp_path / "w"), cwd=tmp_path
    )
    assert_one_line(proc, f"cannot load config '{bad}': SyntaxError")


def test_work_dir_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    proc = invoke("train", "retinanet", "--work-dir", str(tmp_path / "file"), cwd=tmp_path)
    assert_one_line(proc, f"--work-dir {tmp_path / 'file'} is a file, not a directory")


DATA_CASES = {
    "train-without-annotations": (
        {"empty_train": True},
        "instances_train2017.json has no (non-crowd) annotations: nothing to train on",
    ),
    "val-image-missing": ({"drop_val_image": True}, "images listed in"),
    "train-jpeg-truncated": ({"truncate_train_image": True}, "are truncated in"),
}


@pytest.mark.parametrize(("change", "message"), DATA_CASES.values(), ids=DATA_CASES.keys())
def test_bad_coco_data_is_found_before_training(tmp_path, coco_sample, change, message):
    data, name = coco_variant(coco_sample, tmp_path / "coco", **change)
    proc = invoke(
        "train", "retinanet", "--data", str(data), "--work-dir", str(tmp_path / "w"), cwd=tmp_path
    )
    line = assert_one_line(proc, message)
    if name:
        assert name in line  # the file is named
    assert not (tmp_path / "w").exists()


def test_eval_of_a_split_without_annotations_says_there_is_no_map(tmp_path, coco_sample):
    data, _ = coco_variant(coco_sample, tmp_path / "coco", empty_val=True)
    proc = invoke("eval", "no-model-needed", "--data", str(data), cwd=tmp_path)
    assert_one_line(proc, "has no (non-crowd) annotations: there is no mAP without ground truth")
    assert not (tmp_path / "eval_val.json").exists()


def test_eval_out_never_overwrites_a_file(tmp_path, coco_sample):
    out = tmp_path / "mine.json"
    out.write_text("{}")
    proc = invoke("eval", "m", "--data", str(coco_sample), "--out", str(out), cwd=tmp_path)
    assert_one_line(proc, f"--out {out} already exists")
    assert out.read_text() == "{}"


def test_eval_device_is_checked_before_any_model_is_loaded(tmp_path, coco_sample):
    proc = invoke("eval", "m", "--data", str(coco_sample), "--device", "banana", cwd=tmp_path)
    assert_one_line(proc, "--device 'banana' is not a torch device; use cpu, cuda or cuda:N")
    import torch

    if not torch.cuda.is_available():
        proc = invoke("eval", "m", "--data", str(coco_sample), "--device", "cuda:0", cwd=tmp_path)
        assert_one_line(proc, "--device cuda:0: no cuda device is visible on this machine")


OTHER_CASES = {
    "smoke-iters": (["smoke", "--iters", "abc"], "--iters 'abc' must be a positive whole number"),
    "smoke-models": (
        ["smoke", "--models", "retinanet,banana"],
        "--models 'retinanet,banana': choose",
    ),
    "bench-runs": (["bench", "trial", "--runs", "abc"], "--runs 'abc' must be a positive whole"),
    "predict-score": (
        ["predict", "m", "x.jpg", "--out", "o", "--score-thr", "abc"],
        "--score-thr 'abc' must be a number between 0 and 1",
    ),
}


@pytest.mark.parametrize(("args", "message"), OTHER_CASES.values(), ids=OTHER_CASES.keys())
def test_numbers_of_the_other_verbs(tmp_path, args, message):
    assert_one_line(invoke(*args, cwd=tmp_path), message)


OUT_CASES = {
    # an output path that is (or lies below) a file: named as a file, not "not empty" or a
    # FileExistsError traceback (issue 29, C7)
    "export-out-a-file": (["export", "w", "--out", "afile"], "--out {tmp}/afile is a file, not a directory"),
    "export-out-below-a-file": (["export", "w", "--out", "afile/x"], "--out {tmp}/afile/x: {tmp}/afile is a file"),
    "predict-out-a-file": (["predict", "w", "x.jpg", "--out", "afile"], "--out {tmp}/afile is a file, not a directory"),
    "eval-out-below-a-file": (["eval", "w", "--data", "COCO", "--out", "afile/m.json"], "--out {tmp}/afile/m.json: {tmp}/afile is a file"),
}  # fmt: skip


@pytest.mark.parametrize(("args", "message"), OUT_CASES.values(), ids=OUT_CASES.keys())
def test_an_output_path_at_or_below_a_file_says_so(tmp_path, coco_sample, args, message):
    (tmp_path / "afile").write_text("")
    args = [str(coco_sample) if a == "COCO" else a for a in args]
    assert_one_line(invoke(*args, cwd=tmp_path), message.format(tmp=tmp_path))
    assert (tmp_path / "afile").read_text() == ""


def test_ctrl_c_is_one_line_and_exit_130():
    from invoke import Exit

    from tasks import user_errors

    with pytest.raises(Exit) as caught, user_errors("stage-coco interrupted (Ctrl-C)"):
        raise KeyboardInterrupt
    assert caught.value.code == 130
    assert caught.value.message == "error: stage-coco interrupted (Ctrl-C)"


def test_written_files_get_the_usual_mode(tmp_path):
    from common import atomic_file

    old = os.umask(0o022)
    try:
        with atomic_file(tmp_path / "a.yaml") as f:
            f.write("x: 1\n")
    finally:
        os.umask(old)
    assert (tmp_path / "a.yaml").stat().st_mode & 0o777 == 0o644
    assert not list(tmp_path.glob(".*incomplete"))
