"""--cluster: experiment validation, the context directory, and a clear line when no master answers."""

from __future__ import annotations

import socket

import pytest

from errors import ConfigError, TrainingError
from trial.cluster import plan_submission, submit


def test_context_holds_the_trial_and_the_startup_hook_at_its_root(tmp_path):
    sub = plan_submission(
        "gfl", context_dir=tmp_path / "context", sets=["optim_wrapper.optimizer.lr=0.005"]
    )
    ctx = sub.context_dir
    assert (ctx / "startup-hook.sh").is_file()
    assert (ctx / "trial" / "__main__.py").is_file() and (ctx / "staging" / "__init__.py").is_file()
    assert (ctx / "errors.py").is_file() and (ctx / ".detignore").is_file()
    assert not list(ctx.rglob("__pycache__"))
    assert sum(f.stat().st_size for f in ctx.rglob("*") if f.is_file()) < 5 * 1024 * 1024
    assert sub.experiment["hyperparameters"]["optim_wrapper.optimizer.lr"] == 0.005
    assert sub.command[-2:] == [str(tmp_path / "experiment.yaml"), str(ctx)]
    assert sub.command[3:6] == ["-m", sub.master, "experiment"]


def test_custom_config_travels_in_the_context(tmp_path):
    cfg = tmp_path / "mine.py"
    cfg.write_text("_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'\n")
    sub = plan_submission("retinanet", context_dir=tmp_path / "context", config=str(cfg))
    assert sub.experiment["hyperparameters"]["model"] == "configs/mine.py"
    assert (sub.context_dir / "configs" / "mine.py").read_text() == cfg.read_text()


def test_experiment_failing_the_schema_is_refused_before_submitting(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "searcher: {name: single, max_length: {batches: 10}}\nresources: {slots_per_trial: -1}\n"
    )
    with pytest.raises(ConfigError, match=rf"^{bad}: .*"):
        plan_submission("retinanet", context_dir=tmp_path / "ctx", experiment_path=str(bad))


def test_unreachable_master_is_one_clear_line(tmp_path):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(
        TrainingError, match=rf"no Determined master reachable at http://127.0.0.1:{port}"
    ):
        submit("retinanet", master=f"http://127.0.0.1:{port}")
