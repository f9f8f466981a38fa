"""The on-cluster entry path with a master STAND-IN (no Determined master can run here).

What runs is what a Determined 0.38.1 trial container runs: the experiment's startup hook
(``hooks/startup-hook.sh``, staging the ``data:`` section), then the real entrypoint
``python3 -m determined.launch.torch_distributed python3 -m trial`` with 2 slots: Determined's
pid_server/pid_client, torch's launcher, ``determined.launch.wrap_rank`` and two trial ranks, each
building ``det.core.init()`` against the master URL in the cluster-info files.

What is not real: the master. ``master_standin.py`` answers the REST calls the harness makes and
records them. Determined's container setup writes the cluster-info files into
/run/determined/info; the test writes them with Determined's own ``_to_file`` into a temp dir and
bind-mounts it there inside a private mount namespace (``unshare --mount``; root only), so no
other process on this machine sees a "cluster".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from master_standin import TOKEN, MasterStandin

from common import REPO_ROOT as REPO
from common import free_port

pytestmark = [pytest.mark.slow, pytest.mark.training]

MAX_LENGTH = 8
PERIOD = 4
HPARAMS = {  # Determined 0.38's form: the training length lives in the trial's hyperparameters
    "model": "mmdet::retinanet/retinanet_r18_fpn_1x_coco.py",
    "max_iters": MAX_LENGTH,
    "val_interval": PERIOD,
    "checkpoint_interval": PERIOD,
    "global_batch_size": 4,
    "pretrained": False,
    "image_scale": [128, 128],
    "num_workers": 0,
    "log_interval": 2,
}
IN_NAMESPACE = r"""
set -euo pipefail
mount -t overlay overlay -o "lowerdir=/run,upperdir=$NS_DIR/upper,workdir=$NS_DIR/work" /run
mkdir -p /run/determined/info
mount --bind "$INFO_DIR" /run/determined/info
bash "$REPO/hooks/startup-hook.sh"
exec python3 -m determined.launch.torch_distributed python3 -m trial
"""


def _namespaces_work() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = ["unshare", "--mount", "--propagation", "private", "true"]
    return subprocess.run(probe, capture_output=True).returncode == 0


needs_namespace = pytest.mark.skipif(
    not _namespaces_work(), reason="needs root and `unshare --mount` for /run/determined/info"
)


@pytest.fixture(autouse=True)
def _drop_big_files(tmp_path):
    """Checkpoints (~160 MB each) and staged images: keep a failed test's logs, not those."""
    yield
    for name in ("storage", "cache", "coco", "workdir"):
        shutil.rmtree(tmp_path / name, ignore_errors=True)


def experiment(tmp_path: Path, data: Path) -> dict:
    return {
        "name": "standin-launcher-test",
        "entrypoint": "python3 -m determined.launch.torch_distributed python3 -m trial",
        "resources": {"slots_per_trial": 2},
        "searcher": {"name": "single", "metric": "bbox_mAP", "smaller_is_better": False},
        "checkpoint_storage": {"type": "directory", "container_path": str(tmp_path / "storage")},
        "hyperparameters": HPARAMS,
        "data": {
            "source": str(data),
            "cache": str(tmp_path / "cache"),
            "dest": str(tmp_path / "coco"),
            "with_images": True,
        },
    }


def launch(tmp_path: Path, name: str, allocation: str) -> subprocess.CompletedProcess:
    """Run the container's startup hook and entrypoint once (one allocation)."""
    ns_dir = tmp_path / f"ns-{name}"
    for sub in ("upper", "work"):
        (ns_dir / sub).mkdir(parents=True)
    workdir = tmp_path / "workdir"  # the entrypoint's working directory
    workdir.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),  # the context directory
        "DET_USER": "standin-user",
        "DET_SESSION_TOKEN": TOKEN,
        "DET_ALLOCATION_ID": allocation,
        "C10D_PORT": str(free_port()),
        "NS_DIR": str(ns_dir),
        "INFO_DIR": str(tmp_path / f"info-{name}"),
        "REPO": str(REPO),
    }
    command = ["unshare", "--mount", "--propagation", "private", "bash", "-c", IN_NAMESPACE]
    log = tmp_path / f"{name}.log"
    try:
        with log.open("w") as out:
            proc = subprocess.run(
                command, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=1200
            )
    finally:
        for leftover in Path("/tmp").glob(f"*{allocation}*"):  # tensorboard dirs, pid_server socket
            shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink()
        shutil.rmtree(ns_dir, ignore_errors=True)
    print(log.read_text()[-4000:])
    return proc


def checkpoint_steps(standin: MasterStandin) -> list[tuple[int, str]]:
    return [
        (c.body["metadata"]["steps_completed"], c.body["uuid"])
        for c in standin.find("POST", "/api/v1/checkpoints")
    ]


@needs_namespace
def test_standin_master_sees_metrics_checkpoints_progress_and_preemption_then_resume(
    tmp_path, coco_sample
):
    config = experiment(tmp_path, coco_sample)

    def preempt_after_first_validation(call) -> bool:
        # After the step-4 checkpoint and validation; the trial sees it at its next step.
        return call.path.endswith("/metrics") and call.body["group"] == "validation"

    with MasterStandin(preempt_when=preempt_after_first_validation) as standin:
        alloc = f"standin-{uuid.uuid4().hex[:8]}"
        standin.write_cluster_info(
            tmp_path / "info-first",
            experiment=config,
            hparams=HPARAMS,
            slots=2,
            allocation_id=alloc,
        )
        assert launch(tmp_path, "first", alloc).returncode == 0

        print("stand-in saw:", sorted({(c.method, c.path) for c in standin.calls}))
        unexpected = [(c.method, c.path) for c in standin.calls if c.status == 404]
        assert not unexpected
        assert {c.token for c in standin.calls} == {f"Bearer {TOKEN}"}
        assert len(standin.find("POST", "/api/v1/runs/start")) == 2  # core.init on both ranks

        train = standin.metrics("training")
        steps = [step for step, _ in train]
        assert steps[:2] == [2, 4] and len(steps) == len(set(steps))  # once per step: rank 0
        assert all({"loss", "lr"} <= set(metrics) for _, metrics in train)
        val = standin.metrics("validation")
        assert [(step, metrics["batches"]) for step, metrics in val] == [(4, 4)]
        assert "bbox_mAP" in val[0][1]
        progress = [c.body["progress"] for c in standin.find("POST", r"/api/v1/trials/1/progress")]
        assert progress and all(0 < p <= 1 for p in progress)

        # The stand-in preempted once the step-4 validation was reported: the trial acknowledged,
        # stored one more checkpoint at the step it stopped, and exited 0.
        assert standin.find("GET", r"/api/v1/allocations/[^/]+/signals/preemption")
        assert standin.find("POST", rf"/api/v1/allocations/{alloc}/signals/ack_preemption")
        ckpts = checkpoint_steps(standin)
        assert [s for s, _ in ckpts][:1] == [4] and len(ckpts) == 2
        stopped, latest = ckpts[-1]
        assert PERIOD < stopped < MAX_LENGTH
        assert (tmp_path / "storage" / latest / "checkpoint.pth").is_file()

        # A second allocation with that checkpoint as latest resumes after it and finishes.
        standin.reset()
        standin.preempt_when = None
        alloc = f"standin-{uuid.uuid4().hex[:8]}"
        standin.write_cluster_info(
            tmp_path / "info-second",
            experiment=config,
            hparams=HPARAMS,
            slots=2,
            allocation_id=alloc,
            latest_checkpoint=latest,
            steps_completed=stopped,
        )
        assert launch(tmp_path, "second", alloc).returncode == 0
        steps = [step for step, _ in standin.metrics("training")]
        assert steps and min(steps) > stopped and max(steps) == MAX_LENGTH
        assert [s for s, _ in checkpoint_steps(standin)] == [MAX_LENGTH]
        val = standin.metrics("validation")
        assert [(step, metrics["batches"]) for step, metrics in val] == [(MAX_LENGTH, MAX_LENGTH)]
        assert not standin.find("POST", r"/api/v1/allocations/[^/]+/signals/ack_preemption")
