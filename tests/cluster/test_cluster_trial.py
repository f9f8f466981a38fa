"""The bundled trial on a real Determined 0.38.1 master and agent (``invoke cluster up``).

What a user who runs ``invoke train --cluster`` relies on, as the master shows it: the experiment
completes; training metrics land at the batches the trial reports them; validation reports
bbox_mAP; the checkpoint is registered and exports to a stock mmdet model that evaluates to the
master's bbox_mAP; the trial's log shows the startup hook staging the data."""

from __future__ import annotations

import json

import pytest
from cluster_helpers import invoke

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

MAX_ITERS = 8


def test_experiment_completes_with_metrics_checkpoint_and_export(
    real_cluster, cluster_data, tmp_path
):
    experiment = real_cluster.experiment(cluster_data, name="e2e", max_iters=MAX_ITERS)
    exp_id = real_cluster.submit(experiment, tmp_path)
    assert real_cluster.wait_state(exp_id, {"COMPLETED"}) == "COMPLETED"
    (trial,) = real_cluster.trials(exp_id)

    training = real_cluster.metrics(trial.id, "training")
    assert [m.steps_completed for m in training] == list(range(1, MAX_ITERS + 1))  # log_interval 1
    assert all("loss" in m.metrics for m in training)
    (validation,) = real_cluster.metrics(trial.id, "validation")
    assert validation.steps_completed == MAX_ITERS
    master_map = validation.metrics["bbox_mAP"]
    assert 0.0 <= master_map <= 1.0

    logs = real_cluster.logs(trial.id)
    assert "startup-hook: staging data from" in logs
    assert "is deprecated in Determined" not in logs  # the master's own defaults are not the user's
    checkpoints = real_cluster.sdk.get_experiment(exp_id).list_checkpoints()
    assert checkpoints, "no checkpoint registered"
    latest = max(checkpoints, key=lambda c: c.metadata.get("steps_completed", 0))
    assert latest.metadata["steps_completed"] == MAX_ITERS

    out = tmp_path / "export"
    exported = invoke("export", latest.uuid, "--out", str(out), "--master", real_cluster.master)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert (out / "model.pth").is_file() and (out / "config.py").is_file()
    evaluated = invoke("eval", str(out), "--data", str(cluster_data), "--split", "val",
                       "--out", str(tmp_path / "eval.json"))  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    local_map = json.loads((tmp_path / "eval.json").read_text())["metrics"]["bbox_mAP"]
    assert local_map == pytest.approx(master_map, abs=0.001)
