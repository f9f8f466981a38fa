"""hooks/startup-hook.sh run as a real script against the GCS emulator, from a copied context dir
(the way Determined uploads it: startup-hook.sh at the root, staging/ found via PYTHONPATH)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from staging_helpers import GS_SOURCE, REPO

from trial.verbs.cluster import CONTEXT_FILES

pytestmark = pytest.mark.gcs


@pytest.fixture
def context_dir(tmp_path) -> Path:
    ctx = tmp_path / "context"
    ctx.mkdir()
    shutil.copy(REPO / "hooks" / "startup-hook.sh", ctx / "startup-hook.sh")
    for name in CONTEXT_FILES:  # errors.py, common.py: what the context carries beside the packages
        shutil.copy(REPO / name, ctx / name)
    shutil.copytree(REPO / "staging", ctx / "staging",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    return ctx


def _experiment(tmp_path: Path, **data) -> dict:
    base = {"source": GS_SOURCE, "cache": str(tmp_path / "cache"), "dest": str(tmp_path / "coco"),
            "splits": ["train", "val"], "subset": 4, "seed": 0}  # fmt: skip
    return {"name": "retinanet-tiny", "entrypoint": "python3 -m trial", "data": {**base, **data}}


def _run_hook(ctx: Path, **env: str) -> subprocess.CompletedProcess:
    drop = ("PYTHONPATH", "DET_EXPERIMENT_CONFIG", "PYTHONDONTWRITEBYTECODE")  # bytecode: see below
    clean = {k: v for k, v in os.environ.items() if k not in drop}
    return subprocess.run(
        ["bash", str(ctx / "startup-hook.sh")],
        cwd=ctx, env={**clean, "MMDET_PYTHON": sys.executable,
                      "MMDET_DET_TRIAL_INFO": str(ctx / "no-trial.json"), **env},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_hook_stages_from_experiment_config(emulator, context_dir, tmp_path):
    exp = tmp_path / "experiment.yaml"
    exp.write_text(yaml.safe_dump(_experiment(tmp_path)))
    done = _run_hook(context_dir, MMDET_DET_EXPERIMENT_CONFIG=str(exp))
    assert done.returncode == 0, done.stderr
    assert "2 downloaded" in done.stdout
    for split in ("train", "val"):
        doc = json.loads(
            (tmp_path / "coco" / "annotations" / f"instances_{split}2017.json").read_text()
        )
        assert len(doc["images"]) == 4
    # the staging package came from the context dir (its bytecode cache appeared there)
    assert list((context_dir / "staging" / "__pycache__").glob("cli.*.pyc"))
    again = _run_hook(context_dir, MMDET_DET_EXPERIMENT_CONFIG=str(exp))
    assert again.returncode == 0 and "0 downloaded, 2 cache hits" in again.stdout


def test_hook_reads_determined_env_and_trial_info(emulator, context_dir, tmp_path):
    config = _experiment(tmp_path)
    done = _run_hook(context_dir, DET_EXPERIMENT_CONFIG=json.dumps(config))
    assert done.returncode == 0, done.stderr
    assert "staged 2 files" in done.stdout
    info = tmp_path / "trial.json"  # shape of /run/determined/info/trial.json
    info.write_text(json.dumps({"trial_id": 7, "hparams": {}, "config": config}))
    done = _run_hook(context_dir, MMDET_DET_TRIAL_INFO=str(info))
    assert done.returncode == 0 and "0 downloaded" in done.stdout, done.stderr


def test_hook_without_data_section_is_a_no_op(context_dir, tmp_path):
    exp = tmp_path / "experiment.yaml"
    exp.write_text("name: no-data\nentrypoint: python3 -m trial\n")
    done = _run_hook(context_dir, MMDET_DET_EXPERIMENT_CONFIG=str(exp))
    assert done.returncode == 0 and "nothing to stage" in done.stderr
    assert "nothing to stage" in _run_hook(context_dir).stderr


@pytest.mark.parametrize(
    ("value", "message"),
    [('{"data": {"source": ', "is not valid YAML"), ("[1, 2]", "must be a mapping, got list")],
    ids=["not-yaml", "not-a-mapping"],
)
def test_hook_names_the_variable_that_holds_a_bad_config(context_dir, tmp_path, value, message):
    """A malformed $DET_EXPERIMENT_CONFIG was reported as a temp file the hook had already
    deleted (issue 29, C5): the error names the variable."""
    done = _run_hook(context_dir, DET_EXPERIMENT_CONFIG=value)
    assert done.returncode == 1, done.stderr
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: experiment config $DET_EXPERIMENT_CONFIG {message}")
    )
    assert "/tmp" not in done.stderr and "experiment.json" not in done.stderr, done.stderr


def test_hook_refuses_a_data_section_it_cannot_read(context_dir, tmp_path):
    """A typo (``sourc:``) left no data.source: the hook staged nothing and exited 0, and the
    trial failed later. Unknown fields are refused as `stage-coco --experiment-config` refuses
    them (issue 29, W5)."""
    exp = tmp_path / "experiment.yaml"
    data = {"sourc": "gs://b/coco", "cache": str(tmp_path / "c"), "dest": str(tmp_path / "d")}
    exp.write_text(yaml.safe_dump({"name": "typo", "data": data}))
    done = _run_hook(context_dir, MMDET_DET_EXPERIMENT_CONFIG=str(exp))
    assert done.returncode == 1, done.stderr
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("error: data.sourc is not a known field; allowed: ")
    )
    assert not (tmp_path / "c").exists()


def test_hook_fails_the_workload_on_a_bad_source(emulator, context_dir, tmp_path):
    exp = tmp_path / "experiment.yaml"
    exp.write_text(yaml.safe_dump(_experiment(tmp_path, source="gs://missing-bucket/coco")))
    done = _run_hook(context_dir, MMDET_DET_EXPERIMENT_CONFIG=str(exp))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: bucket gs://missing-bucket")


def test_hook_is_shellcheck_clean():
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    done = subprocess.run([shellcheck, str(REPO / "hooks" / "startup-hook.sh")],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stdout
