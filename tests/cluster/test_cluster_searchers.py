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
    validation metrics; trials the searcher stops end COMPLETED, never ERROR, and stop early
    (the 0.38.1 master only marks them: the trial's SearcherStop reads it).

    The searcher's decisions are made predictable: one bracket (every trial may be stopped at
    the first rung, 4 of 16 batches), one trial at a time, and the metric (``train_loss``, which
    the trial reports with each validation) scaled by a sampled classification-loss weight of
    1, 10, 100 or 1000. A trial continues past the rung only if it is the best so far, so one
    whose weight is above an earlier trial's must stop; below every earlier one, it must not."""
    weight = "model.bbox_head.loss_cls.loss_weight"
    experiment = real_cluster.experiment(
        cluster_data,
        name="asha",
        max_iters=None,
        hparams={
            "val_interval": 4,
            "checkpoint_interval": 4,
            weight: {"type": "categorical", "vals": [1.0, 10.0, 100.0, 1000.0]},
        },
        searcher={
            "name": "adaptive_asha",
            "metric": "train_loss",
            "smaller_is_better": True,
            "max_trials": 4,
            "max_time": 16,
            "time_metric": "batches",
            "max_rungs": 2,
            "bracket_rungs": [2],
            "divisor": 4,
            "max_concurrent_trials": 1,
        },
        reproducibility={"experiment_seed": 5},  # the same four weights every run
    )
    del experiment["hyperparameters"]["max_iters"]  # ASHA's max_time is the length
    exp_id = real_cluster.submit(experiment, tmp_path)
    assert real_cluster.wait_state(exp_id, {"COMPLETED"}, timeout=1500) == "COMPLETED"
    trials = sorted(real_cluster.trials(exp_id), key=lambda t: t.id)  # in the order they ran
    assert len(trials) == 4
    assert {t.state.value.replace("STATE_", "") for t in trials} == {"COMPLETED"}
    must_stop, must_not = [], []
    for k, trial in enumerate(trials):
        earlier = [t.hparams[weight] for t in trials[:k]]
        if earlier and trial.hparams[weight] > min(earlier):
            must_stop.append(trial)
        elif not earlier or trial.hparams[weight] < min(earlier):
            must_not.append(trial)  # (equal weights: the losses decide)
    assert must_stop, [t.hparams[weight] for t in trials]  # the seed gives the searcher work
    for trial in trials:
        done = max(m.steps_completed for m in real_cluster.metrics(trial.id, "training"))
        stopped = "the searcher stopped this trial" in real_cluster.logs(trial.id)
        weights = [t.hparams[weight] for t in trials]
        if trial in must_stop:
            assert stopped and done < 16, (trial.id, done, weights)
        if trial in must_not:
            assert not stopped and done == 16, (trial.id, done, weights)
    (best,) = real_cluster.sdk.get_experiment(exp_id).list_checkpoints(max_results=1)  # by metric
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
