"""The bundled trial on a real Determined 0.38.1 master and agent (``invoke cluster up``).

What a user who runs ``invoke train --cluster`` relies on, as the master shows it: the experiment
completes; training metrics land at the batches the trial reports them; validation reports
bbox_mAP; the checkpoint is registered and exports to a stock mmdet model that evaluates to the
master's bbox_mAP; the trial's log shows the startup hook staging the data."""

from __future__ import annotations

import json
import tarfile

import pytest
import yaml
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

    exp = real_cluster.sdk.get_experiment(exp_id)
    assert _progress(real_cluster, exp_id) == 1.0  # report_progress reached the master
    archive = exp.download_code(str(tmp_path / "code"))  # what the master holds and ran: a .tar.gz
    with tarfile.open(archive) as tar:
        held = {m.name.removeprefix("./") for m in tar.getmembers() if m.isfile()}
    assert {"startup-hook.sh", "trial/__main__.py", "errors.py", "common.py"} <= held
    assert not any(f.startswith(("bench/", "trial/testing/", "staging/testing/")) for f in held)

    logs = real_cluster.logs(trial.id)
    assert "startup-hook: staging data from" in logs
    assert f"trial finished at step {MAX_ITERS}; bbox_mAP" in logs  # its summary saw the validation
    assert "is deprecated in Determined" not in logs  # the master's own defaults are not the user's
    checkpoints = real_cluster.sdk.get_experiment(exp_id).list_checkpoints()
    assert checkpoints, "no checkpoint registered"
    latest = max(checkpoints, key=lambda c: c.metadata.get("steps_completed", 0))
    assert latest.metadata["steps_completed"] == MAX_ITERS

    out = tmp_path / "exported" / "export"
    exported = invoke("export", latest.uuid, "--out", str(out), "--master", real_cluster.master)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert (out / "model.pth").is_file() and (out / "config.py").is_file()
    info = json.loads((out / "export.json").read_text())
    assert info["source"]["checkpoint"] == latest.uuid and info["iterations"] == MAX_ITERS
    assert info["validation"]["bbox_mAP"] == pytest.approx(master_map)  # what the master recorded
    assert [p.name for p in out.parent.iterdir()] == ["export"]  # the download was temporary
    evaluated = invoke("eval", str(out), "--data", str(cluster_data), "--split", "val",
                       "--out", str(tmp_path / "eval.json"))  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    local_map = json.loads((tmp_path / "eval.json").read_text())["metrics"]["bbox_mAP"]
    assert local_map == pytest.approx(master_map, abs=0.001)


def _progress(cluster, exp_id: int) -> float:
    from determined.common.api import bindings

    return bindings.get_GetExperiment(cluster.session, experimentId=exp_id).experiment.progress


def test_the_masters_refusal_is_one_line_and_nothing_is_created(
    real_cluster, cluster_data, tmp_path
):
    """Valid offline, refused by this master (a resource pool it does not have)."""
    from determined.common.api import bindings

    before = len(bindings.get_GetExperiments(real_cluster.session).experiments)
    experiment = real_cluster.experiment(cluster_data, name="refused")
    experiment["resources"]["resource_pool"] = "no-such-pool"
    path = tmp_path / "refused.yaml"
    path.write_text(yaml.safe_dump(experiment, sort_keys=False))
    proc = invoke("train", "retinanet", "--cluster", "--master", real_cluster.master,
                  "--experiment", str(path))  # fmt: skip
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: the master at {real_cluster.master} refused the experiment: ")
    assert "no-such-pool" in line
    assert len(bindings.get_GetExperiments(real_cluster.session).experiments) == before
