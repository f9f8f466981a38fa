"""Helpers for the tests on the real cluster: the cluster CLI, a small experiment, submission
through ``invoke train --cluster``, and waiting on the master through Determined's SDK."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from common import REPO_ROOT as REPO
from common import free_port  # noqa: F401  (conftest takes it from here)
from images.matrix import expand_matrix, load_matrix, select
from images.plan import repository

INVOKE = [sys.executable, "-m", "invoke"]
LOCAL_EXPERIMENT = REPO / "experiments" / "retinanet-local.yaml"
DATA_MOUNT = "/mnt/coco-source"  # where it mounts the data and the node cache
CACHE_MOUNT = "/mnt/node-cache"


def cpu_tag() -> str:
    return select(expand_matrix(load_matrix()), ["cpu"])[0].readable_tag


def local_image() -> str:
    """What ``invoke build-image --variant cpu`` tags on this machine."""
    return f"{repository(None)}:{cpu_tag()}"


def cluster_cli(*args: str, state: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*INVOKE, "cluster", *args, "--state-dir", str(state)], cwd=REPO,
                          capture_output=True, text=True, timeout=1200)  # fmt: skip


def invoke(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([*INVOKE, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


@dataclass
class Cluster:
    """A running local cluster and a logged-in session on it."""

    master: str
    user: str
    password: str
    state_dir: Path
    args: list[str]
    session: Any
    image: str
    node_cache: Path = field(init=False)

    def __post_init__(self) -> None:
        self.node_cache = self.state_dir.parent / "node-cache"
        self.node_cache.mkdir(parents=True, exist_ok=True)

    @property
    def sdk(self):
        from determined.common.experimental.determined import Determined

        return Determined._from_session(self.session)

    def experiment(
        self,
        data: Path,
        *,
        name: str,
        max_iters: int = 8,
        slots: int = 1,
        hparams: dict | None = None,
        **top: Any,
    ) -> dict:
        """experiments/retinanet-local.yaml (what README's cluster section submits), shortened: data
        from ``data`` (bind-mounted read-only), this cluster's node cache, ``max_iters`` batches of 2
        per slot, a checkpoint every 4, metrics every batch, no restarts."""
        experiment = yaml.safe_load(LOCAL_EXPERIMENT.read_text())
        sources = {m["container_path"]: m for m in experiment["bind_mounts"]}
        sources[DATA_MOUNT]["host_path"] = str(data)
        sources[CACHE_MOUNT]["host_path"] = str(self.node_cache)
        experiment["name"] = name
        experiment["resources"]["slots_per_trial"] = slots
        experiment["max_restarts"] = 0
        experiment["hyperparameters"].update(
            {
                "max_iters": max_iters,
                "val_interval": max_iters,
                "checkpoint_interval": 4,
                "global_batch_size": 2 * slots,
                "log_interval": 1,
                **(hparams or {}),
            }
        )
        experiment.update(top)
        return experiment

    def submit(self, experiment: dict, tmp_path: Path, *extra: str) -> int:
        """``invoke train retinanet --cluster --experiment FILE``; returns the experiment id."""
        path = tmp_path / f"{experiment['name']}.yaml"
        path.write_text(yaml.safe_dump(experiment, sort_keys=False))
        proc = invoke("train", "retinanet", "--cluster", "--master", self.master,
                      "--experiment", str(path), *extra)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-1000:]
        # One line and no library chatter (pkg_resources, "Preparing files to send to master").
        assert proc.stderr == "", proc.stderr[-3000:]
        (line,) = proc.stdout.strip().splitlines()
        found = re.fullmatch(
            rf"Created experiment (\d+): {re.escape(self.master)}/det/experiments/\1", line
        )
        assert found, proc.stdout
        return int(found.group(1))

    def wait_state(self, exp_id: int, states: set[str], *, timeout: float = 900) -> str:
        """Poll the experiment until its state is one of ``states`` (e.g. {"COMPLETED"})."""
        exp = self.sdk.get_experiment(exp_id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            exp.reload()
            state = exp.state.value.replace("STATE_", "")
            if state in states:
                return state
            if state in {"ERROR", "CANCELED", "DELETED"} - states:
                raise AssertionError(f"experiment {exp_id} ended {state}: {self.logs_tail(exp_id)}")
            time.sleep(2)
        raise AssertionError(f"experiment {exp_id} not in {states} after {timeout} s")

    def trials(self, exp_id: int) -> list:
        return self.sdk.get_experiment(exp_id).list_trials()

    def checkpoints(self, exp_id: int) -> dict[str, dict[int, str]]:
        """State -> {steps_completed: uuid} of every checkpoint, deleted ones too (the SDK's
        list_checkpoints shows only COMPLETED)."""
        from determined.common.api import bindings

        states = [bindings.checkpointv1State.COMPLETED, bindings.checkpointv1State.DELETED]
        found = bindings.get_GetExperimentCheckpoints(self.session, id=exp_id, states=states)
        out: dict[str, dict[int, str]] = {}
        for ckpt in found.checkpoints:
            state = ckpt.state.value.replace("STATE_", "")
            out.setdefault(state, {})[int(ckpt.metadata["steps_completed"])] = ckpt.uuid
        return out

    def restarts(self, trial_id: int) -> int:
        from determined.common.api import bindings

        return bindings.get_GetTrial(self.session, trialId=trial_id).trial.restarts

    def logs(self, trial_id: int) -> str:
        from determined.common.experimental.trial import Trial

        return "\n".join(line.rstrip("\n") for line in Trial(trial_id, self.session).iter_logs())

    def logs_tail(self, exp_id: int, lines: int = 40) -> str:
        text = "\n".join(self.logs(t.id) for t in self.trials(exp_id))
        return "\n".join(text.splitlines()[-lines:])

    def metrics(self, trial_id: int, group: str) -> list:
        from determined.common.experimental.trial import Trial

        return list(Trial(trial_id, self.session).iter_metrics(group))

    def wait_for_batches(self, trial_id: int, batches: int, *, timeout: float = 600) -> int:
        """Wait until the trial reported training metrics at ``batches`` or later."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = [m.steps_completed for m in self.metrics(trial_id, "training")]
            if done and max(done) >= batches:
                return max(done)
            time.sleep(1)
        raise AssertionError(f"trial {trial_id} did not reach batch {batches} in {timeout} s")
