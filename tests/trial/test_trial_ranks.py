"""Many ranks, the fast part: the config adaptations, the command lines, the preemption agreement
and bad --nproc input. The 2-rank training runs are in test_trial_multirank.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

from common import REPO_ROOT as REPO
from trial.runtime.ranks import PREEMPT_REQUEST, preempt_request_file, ranks_command
from trial.verbs.local import trial_command


def built_config():
    from trial.settings.config import (
        DataPaths,
        TrainSettings,
        build_config,
        load_base_config,
        resolve_base,
    )

    data = DataPaths("a.json", "b.json", "imgs/", "imgs/")
    settings = TrainSettings(
        data=data, work_dir="w", max_iters=4, val_interval=2, checkpoint_interval=2
    )
    return build_config(load_base_config(resolve_base("retinanet")), settings)


def test_gloo_config_wraps_cpu_ddp_without_device_ids_and_collects_by_collectives():
    from trial.engine.distributed import apply_distributed

    cfg = built_config()
    apply_distributed(cfg, dist_backend="gloo")
    assert cfg["env_cfg"]["dist_cfg"] == {"backend": "gloo"}
    assert cfg["model_wrapper_cfg"]["device_ids"] is None
    assert cfg["model_wrapper_cfg"]["type"] == "MMDistributedDataParallel"
    assert cfg["val_evaluator"]["collect_device"] == "gpu"  # all_gather_object, no shared tmpdir
    assert cfg["test_evaluator"]["collect_device"] == "gpu"


def test_nccl_config_keeps_mmengine_device_ids_and_handles_evaluator_lists():
    from trial.engine.distributed import apply_distributed

    cfg = built_config()
    cfg["val_evaluator"] = [dict(cfg["val_evaluator"]), dict(type="VOCMetric")]
    apply_distributed(cfg, dist_backend="nccl")
    assert cfg["env_cfg"]["dist_cfg"] == {"backend": "nccl"}
    assert "model_wrapper_cfg" not in cfg
    assert [m["collect_device"] for m in cfg["val_evaluator"]] == ["gpu", "gpu"]


def test_nproc_goes_to_the_trial_and_the_ranks_to_torchs_launcher(tmp_path):
    local = trial_command("exp.yaml", tmp_path, nproc=2)
    assert local[1:3] == ["-m", "trial"] and local[-2:] == ["--nproc", "2"]
    assert "--nproc" not in trial_command("exp.yaml", tmp_path)
    ranks = ranks_command(local[3:], nproc=2)
    assert ranks[1:] == [
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "--",
        "trial",
        *local[3:],
    ]
    assert preempt_request_file(tmp_path) == tmp_path.resolve() / PREEMPT_REQUEST


def test_rank_preemption_agrees_one_step_later_on_the_request_file_or_the_chief(tmp_path):
    import torch.distributed as dist

    from trial.engine.distributed import RankPreemption

    class Inner:  # what the trial wraps: the chief's preempt context (asked on rank 0 only)
        asked = False

        def should_preempt(self, auto_ack=True):
            return self.asked

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        request = tmp_path / PREEMPT_REQUEST
        preempt = RankPreemption(Inner(), request_file=request, timeout_s=30)
        assert not preempt.should_preempt()
        request.touch()
        assert not preempt.should_preempt()  # this step's flag goes out with an all-reduce...
        assert preempt.should_preempt()  # ...which every rank reads at the next step
        request.unlink()
        assert preempt.should_preempt()  # a decision stands
        inner = Inner()
        preempt = RankPreemption(inner)
        assert not preempt.should_preempt()
        inner.asked = True
        assert [preempt.should_preempt() for _ in range(2)] == [False, True]
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(
    ("nproc", "message"),
    [
        ("0", "error: --nproc '0' must be a positive whole number (local ranks)"),
        ("3", "must be a positive multiple of the 3 slots"),
    ],
)
def test_bad_nproc_is_one_line_and_exit_1(tmp_path, nproc, message):
    command = [sys.executable, "-m", "invoke", "-r", str(REPO), "train", "retinanet"]
    command += ["--nproc", nproc, "--work-dir", str(tmp_path / "w")]
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "w" / "run").exists()


def test_trial_refuses_nproc_0(tmp_path):
    command = [
        sys.executable,
        "-m",
        "trial",
        "--local",
        "--nproc",
        "0",
        "--work-dir",
        str(tmp_path),
    ]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: --nproc 0 must be at least 1"


def test_the_launcher_gets_omp_num_threads_so_it_prints_no_banner(monkeypatch, tmp_path):
    """torch's launcher sets OMP_NUM_THREADS=1 for every rank when it is unset, and says so in a
    banner on the terminal of every `--nproc 2` run (issue 29, C4): the trial sets it itself."""
    from trial.runtime import ranks

    seen: dict = {}
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(ranks, "run_forwarding_signals", lambda _cmd, **kw: seen.update(kw) or 0)
    assert ranks.run_ranks(["--local"], nproc=2, work_dir=tmp_path) == 0
    assert seen["env"]["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "4")  # a user's own setting wins
    ranks.run_ranks(["--local"], nproc=2, work_dir=tmp_path)
    assert seen["env"]["OMP_NUM_THREADS"] == "4"
