"""ASHA, two slots in one container, and checkpoint GC, on a real master."""

from __future__ import annotations

import pytest
from cluster_helpers import invoke

from devcluster.processes import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def test_asha_completes_stopped_trials_complete_and_the_best_exports(
    real_cluster, cluster_data, tmp_path
):
    """Determined 0.38 ASHA: max_time + time_metric, the trial reports ``batches`` with its
    validation metrics; trials the searcher stops are preempted and end COMPLETED, never ERROR.
    The metric is ``train_loss`` (the mean training loss the trial reports with each validation):
    after a few CPU batches every trial's mAP is 0, a tie that ASHA promotes."""
    experiment = real_cluster.experiment(
        cluster_data,
        name="asha",
        max_iters=None,
        hparams={
            "val_interval": 4,
            "checkpoint_interval": 4,
            "optim_wrapper.optimizer.lr": {"type": "log", "minval": -6, "maxval": -2, "base": 10},
        },
        searcher={
            "name": "adaptive_asha",
            "metric": "train_loss",
            "smaller_is_better": True,
            "max_trials": 4,
            "max_time": 16,
            "time_metric": "batches",
            "max_rungs": 2,
            "divisor": 4,
            "max_concurrent_trials": 2,
        },
        reproducibility={"experiment_seed": 5},  # the same four learning rates every run
    )
    del experiment["hyperparameters"]["max_iters"]  # ASHA's max_time is the length
    exp_id = real_cluster.submit(experiment, tmp_path)
    assert real_cluster.wait_state(exp_id, {"COMPLETED"}, timeout=1500) == "COMPLETED"
    trials = real_cluster.trials(exp_id)
    assert len(trials) == 4
    assert {t.state.value.replace("STATE_", "") for t in trials} == {"COMPLETED"}
    lengths = sorted(
        max(m.steps_completed for m in real_cluster.metrics(t.id, "training")) for t in trials
    )
    assert lengths[-1] == 16 and lengths[0] < 16  # the searcher stopped some trials early
    for trial in trials:  # ... and they heard it (the 0.38.1 master does not tell them)
        done = max(m.steps_completed for m in real_cluster.metrics(trial.id, "training"))
        stopped = "the searcher stopped this trial" in real_cluster.logs(trial.id)
        assert stopped == (done < 16), (trial.id, done)
    best = real_cluster.sdk.get_experiment(exp_id).top_checkpoint()
    out = tmp_path / "best"
    exported = invoke("export", best.uuid, "--out", str(out), "--master", real_cluster.master)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert (out / "model.pth").is_file()


def test_two_slots_run_two_ranks_in_one_container_reporting_once(
    real_cluster, cluster_data, tmp_path
):
    experiment = real_cluster.experiment(cluster_data, name="two-slots", max_iters=6, slots=2)
    exp_id = real_cluster.submit(experiment, tmp_path)
    assert real_cluster.wait_state(exp_id, {"COMPLETED"}) == "COMPLETED"
    (trial,) = real_cluster.trials(exp_id)
    steps = [m.steps_completed for m in real_cluster.metrics(trial.id, "training")]
    assert steps == [1, 2, 3, 4, 5, 6]  # chief only: one report per step
    logs = real_cluster.logs(trial.id)
    assert "[rank=0]" in logs and "[rank=1]" in logs  # torch_distributed's two ranks
    assert len(real_cluster.metrics(trial.id, "validation")) == 1


def test_checkpoint_gc_keeps_what_determined_promises(real_cluster, cluster_data, tmp_path):
    """save_trial_latest: 1, save_trial_best: 0, save_experiment_best: 0, a validation with every
    checkpoint -> only the last checkpoint survives; exporting a deleted one is one line.

    GC runs as its own task in the cluster's default image after the experiment ends (the real
    master's GCCkptSpec; the local cluster's default image is the project's). Only checkpoints
    with a validation are ranked together: Determined's GC query partitions "latest" by the
    validation's trial id, so a checkpoint without a validation is the latest of its own group."""
    storage = {"save_trial_latest": 1, "save_trial_best": 0, "save_experiment_best": 0}
    experiment = real_cluster.experiment(cluster_data, name="gc", max_iters=12,
                                         hparams={"val_interval": 4}, checkpoint_storage=storage)  # fmt: skip
    exp_id = real_cluster.submit(experiment, tmp_path)
    assert real_cluster.wait_state(exp_id, {"COMPLETED"}) == "COMPLETED"
    found: dict = {}

    def collected() -> bool:
        found.update(real_cluster.checkpoints(exp_id))
        return sorted(found.get("DELETED", {})) == [4, 8]

    wait_for("checkpoint GC", collected, timeout=300)
    assert sorted(found["COMPLETED"]) == [12]
    deleted = found["DELETED"][4]
    proc = invoke("export", deleted, "--out", str(tmp_path / "x"), "--master", real_cluster.master)
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert deleted in line and "was deleted by checkpoint GC" in line
