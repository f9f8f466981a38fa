"""Preemption and faults on a real master: pause/activate, a killed container, a restarted agent
and a restarted master (Determined's own e2e tests assert the same of their trials:
test_pause_and_nan_validations, test_continue_max_restart, test_agent_restart_recover_experiment,
test_master_restart_reattach_recover_experiment)."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from cluster_helpers import cluster_cli

from devcluster import podman
from devcluster.cluster import State
from devcluster.processes import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

MAX_ITERS = 16


def _steps(cluster, trial_id: int) -> list[int]:
    return [m.steps_completed for m in cluster.metrics(trial_id, "training")]


def _finished_all_batches(cluster, exp_id: int) -> None:
    """Exactly MAX_ITERS batches: every step reported once, the last checkpoint at the end."""
    (trial,) = cluster.trials(exp_id)
    steps = _steps(cluster, trial.id)
    assert sorted(set(steps)) == list(range(1, MAX_ITERS + 1))
    checkpoints = cluster.sdk.get_experiment(exp_id).list_checkpoints()
    assert max(c.metadata["steps_completed"] for c in checkpoints) == MAX_ITERS


def test_pause_checkpoints_and_activate_resumes_without_replay(real_cluster, cluster_data, tmp_path):
    experiment = real_cluster.experiment(cluster_data, name="pause", max_iters=MAX_ITERS,
                                         hparams={"checkpoint_interval": 100})  # fmt: skip
    exp_id = real_cluster.submit(experiment, tmp_path)
    exp = real_cluster.sdk.get_experiment(exp_id)
    trial = exp.await_first_trial()
    real_cluster.wait_for_batches(trial.id, 3)
    exp.pause()
    # The experiment reads PAUSED at once; the trial goes on until it sees the preemption.
    assert real_cluster.wait_state(exp_id, {"PAUSED"}, timeout=300) == "PAUSED"
    wait_for("the preemption checkpoint", lambda: bool(exp.list_checkpoints()), timeout=300)
    wait_for("the trial to exit", lambda: "exited successfully with a zero exit code"
             in real_cluster.logs(trial.id), timeout=120)  # fmt: skip
    (paused_at,) = [c.metadata["steps_completed"] for c in exp.list_checkpoints()]
    assert f"trial preempted at step {paused_at}" in real_cluster.logs(trial.id)
    assert 3 <= paused_at < MAX_ITERS  # the preemption checkpoint, not a periodic one
    exp.activate()
    assert real_cluster.wait_state(exp_id, {"COMPLETED"}) == "COMPLETED"
    logs = real_cluster.logs(trial.id)
    assert f"resume at iteration {paused_at}" in logs and "no sample replayed" in logs
    _finished_all_batches(real_cluster, exp_id)


def test_a_killed_container_restarts_from_its_last_checkpoint(real_cluster, cluster_data, tmp_path):
    experiment = real_cluster.experiment(cluster_data, name="kill9", max_iters=MAX_ITERS,
                                         max_restarts=1)  # fmt: skip
    exp_id = real_cluster.submit(experiment, tmp_path)
    exp = real_cluster.sdk.get_experiment(exp_id)
    trial = exp.await_first_trial()
    real_cluster.wait_for_batches(trial.id, 6)  # past the checkpoint at batch 4
    state = State.load(real_cluster.state_dir / "cluster.json")
    listed = subprocess.run(podman.podman_argv("ps", "-q", "--filter", f"label={state.label}"),
                            capture_output=True, text=True, check=True)  # fmt: skip
    (container,) = listed.stdout.split()
    subprocess.run(podman.podman_argv("kill", "-s", "KILL", container), check=True,
                   capture_output=True)  # fmt: skip
    assert real_cluster.wait_state(exp_id, {"COMPLETED"}) == "COMPLETED"
    assert real_cluster.restarts(trial.id) == 1
    assert "resume at iteration 4" in real_cluster.logs(trial.id)
    _finished_all_batches(real_cluster, exp_id)


@pytest.mark.parametrize("daemon", ["agent-1", "master"])
def test_experiment_completes_across_a_restart_of(daemon, real_cluster, cluster_data, tmp_path):
    experiment = real_cluster.experiment(cluster_data, name=f"restart-{daemon}",
                                         max_iters=MAX_ITERS, max_restarts=2)  # fmt: skip
    exp_id = real_cluster.submit(experiment, tmp_path)
    trial = real_cluster.sdk.get_experiment(exp_id).await_first_trial()
    real_cluster.wait_for_batches(trial.id, 5)
    state = State.load(real_cluster.state_dir / "cluster.json")
    victim = state.daemon(daemon)
    os.kill(victim.pid, signal.SIGKILL)
    wait_for(f"{daemon} to die", lambda: not victim.alive(), timeout=30)
    again = cluster_cli("up", *real_cluster.args, state=real_cluster.state_dir)  # restarts it
    assert again.returncode == 0, again.stderr[-2000:]
    assert State.load(real_cluster.state_dir / "cluster.json").daemon(daemon).pid != victim.pid
    assert real_cluster.wait_state(exp_id, {"COMPLETED"}) == "COMPLETED"
    _finished_all_batches(real_cluster, exp_id)
