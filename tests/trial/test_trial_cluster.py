"""--cluster without a master: offline checks, --dry-run, the context directory, an unreachable
master. Submission itself (validateOnly, then create; the master's refusal) runs against a real
Determined 0.38.1 master in tests/cluster/."""

from __future__ import annotations

import pytest
import yaml

from common import free_port
from errors import ConfigError, TrainingError
from trial.verbs.cluster import plan_submission, submit

REGISTRY = "ghcr.io/acme"  # where `invoke build-image --registry ghcr.io/acme --push` put the image


def test_context_holds_the_trial_and_the_startup_hook_at_its_root(tmp_path):
    sub = plan_submission(
        "gfl",
        context_dir=tmp_path / "context",
        sets=["optim_wrapper.optimizer.lr=0.005"],
        registry=REGISTRY,
    )
    ctx = sub.context_dir
    assert (ctx / "startup-hook.sh").is_file()
    assert (ctx / "trial" / "__main__.py").is_file() and (ctx / "staging" / "__init__.py").is_file()
    assert (ctx / "errors.py").is_file() and (ctx / "common.py").is_file()
    assert (ctx / ".detignore").is_file()
    assert not list(ctx.rglob("__pycache__"))
    # test harnesses stay home, by folder; the benchmarks live outside the packages that travel
    assert not list(ctx.rglob("testing")) and not (ctx / "bench").exists()
    assert sum(f.stat().st_size for f in ctx.rglob("*") if f.is_file()) < 5 * 1024 * 1024
    assert sub.experiment["hyperparameters"]["optim_wrapper.optimizer.lr"] == 0.005
    assert sub.notices == []


def test_custom_config_travels_in_the_context(tmp_path):
    cfg = tmp_path / "mine.py"
    cfg.write_text("_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'\n")
    sub = plan_submission(
        "retinanet", context_dir=tmp_path / "context", config=str(cfg), registry=REGISTRY
    )
    assert sub.experiment["hyperparameters"]["model"] == "configs/mine.py"
    assert (sub.context_dir / "configs" / "mine.py").read_text() == cfg.read_text()


def test_experiment_failing_the_038_rules_is_refused_before_submitting(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "entrypoint: python3 -m trial\n"
        "searcher: {name: single, metric: bbox_mAP}\nresources: {slots_per_trial: -1}\n"
    )
    with pytest.raises(ConfigError, match=rf"^{bad}: resources.slots_per_trial: "):
        plan_submission("retinanet", context_dir=tmp_path / "ctx", experiment_path=str(bad))


def test_dry_run_prints_the_experiment_and_the_context_and_submits_nothing(tmp_path):
    out = submit(
        "retinanet-asha", dry_run=True, master=f"http://127.0.0.1:{free_port()}", registry=REGISTRY
    )
    header, _, rest = out.partition("\n")
    assert header.startswith("# experiment (valid for Determined 0.38.1")
    text, _, listing = rest.partition("# context directory: ")
    assert yaml.safe_load(text)["searcher"]["time_metric"] == "batches"
    assert "startup-hook.sh" in listing and "trial/__main__.py" in listing
    assert " KiB (limit 5 MiB)" in listing.splitlines()[0]


def test_dry_run_names_the_deprecated_fields(tmp_path):
    old = yaml.safe_load(_bundled("retinanet").read_text())
    old["searcher"]["max_length"] = {"batches": 90000}
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(old))
    out = submit("retinanet", dry_run=True, experiment_path=str(path), registry=REGISTRY)
    assert out.splitlines()[0] == (
        f"notice: {path}: searcher.max_length is deprecated in Determined 0.38.1; "
        "set hyperparameters.max_iters instead"
    )


def test_unreachable_master_is_one_clear_line(tmp_path):
    port = free_port()
    with pytest.raises(
        TrainingError, match=rf"no Determined master reachable at http://127.0.0.1:{port}"
    ):
        submit("retinanet", master=f"http://127.0.0.1:{port}", registry=REGISTRY)


def _bundled(name: str):
    from trial.settings.hparams import EXPERIMENTS_DIR

    return EXPERIMENTS_DIR / f"{name}.yaml"
