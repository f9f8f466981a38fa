"""A two-node Determined trial on one machine: the harness of ``test_trial_multinode.py``.

Each node is a network namespace (``trial/testing/nodes.py``: its own address in 198.18.0.0/15, loopback,
one veth on a private bridge) plus a private mount namespace (``unshare --mount``) in which the
node's own directory is its ``/tmp`` (node cache, work directory, HOME, Determined's temp files)
and the cluster-info files written with Determined's own ``_to_file`` are ``/run/determined/info``.
On each node runs what a Determined 0.38.1 trial container runs: ``hooks/startup-hook.sh``
(staging the experiment's ``data:`` section from the GCS emulator into that node's cache), then
``python3 -m determined.launch.torch_distributed python3 -m trial``.

The services listen on the host side of the bridge: the master stand-in (``master_standin.py``)
and a request-recording proxy (``staging.testing.fault_proxy.FaultProxy``) in front of the GCS emulator, which
holds the COCO sample and the checkpoints (Determined's ``gcs`` storage: google-cloud-storage
honours ``STORAGE_EMULATOR_HOST``). Both record the caller's address, i.e. which node called.
Nothing but the repository, the venv and the interpreter is shared between the nodes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from master_standin import TOKEN, MasterStandin

from common import REPO_ROOT as REPO
from staging.testing.fault_proxy import FaultProxy
from staging.testing.gcs_emulator import ENV, ensure_bucket, running_emulator, upload_dir
from trial.testing.nodes import Network, Node, node_network

HERE = Path(__file__).resolve().parent
DATA_BUCKET, DATA_PREFIX = "coco", "sample"
CHECKPOINT_BUCKET = "checkpoints"
C10D_PORT = 29400  # torch's rendezvous port on the chief node (each node has its own ports)
# Inside the node, before anything of the trial runs: the node's mounts, then the container's
# startup hook and entrypoint, exactly as Determined runs them.
IN_NODE = r"""
set -euo pipefail
mount -t overlay overlay -o "lowerdir=/run,upperdir=$RUN_DIR/upper,workdir=$RUN_DIR/work" /run
mkdir -p /run/determined/info
mount --bind "$INFO_DIR" /run/determined/info
# The node's own /tmp hides the host's, and with it a checkout or virtualenv that lives there (a
# fresh clone under /tmp): hold those aside in the node's private /run, then put them back.
IFS=: read -r -a keep <<<"$KEEP_VISIBLE"
for path in "${keep[@]}"; do
  if [[ "$path" == /tmp/* ]]; then mkdir -p "/run/keep$path"; mount --bind "$path" "/run/keep$path"; fi
done
mount --bind "$NODE_TMP" /tmp
for path in "${keep[@]}"; do
  if [[ "$path" == /tmp/* ]]; then mkdir -p "$path"; mount --bind "/run/keep$path" "$path"; fi
done
sleep "$START_DELAY"
mkdir -p /tmp/home "/tmp/$DET_ALLOCATION_ID"
cd "/tmp/$DET_ALLOCATION_ID"
bash "$REPO/hooks/startup-hook.sh"
exec python3 -m determined.launch.torch_distributed python3 -m trial
"""


@dataclass
class Allocation:
    """One allocation: the processes of its containers, one per node."""

    id: str
    procs: list[subprocess.Popen]
    logs: list[Path]

    def wait(self, timeout: float) -> list[int]:
        """Exit codes of every node (each killed and reported as -9 ``timeout`` s from now)."""
        deadline = time.monotonic() + timeout
        codes = []
        for proc in self.procs:
            try:
                codes.append(proc.wait(timeout=max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                codes.append(proc.wait())
        return codes

    def log(self, node: int) -> str:
        return self.logs[node].read_text(errors="replace")


@dataclass
class Cluster:
    """Two nodes, the master stand-in and the GCS emulator behind a recording proxy."""

    net: Network
    root: Path
    standin: MasterStandin
    gcs: FaultProxy

    @property
    def nodes(self) -> tuple[Node, ...]:
        return self.net.nodes

    def node_tmp(self, node: int) -> Path:
        """The node's ``/tmp``, seen from the host (its disk: node cache, work dirs, probe)."""
        return self.root / f"node{node}" / "tmp"

    def start(
        self,
        experiment: Mapping,
        *,
        slots: int,
        allocation: str,
        latest_checkpoint: str | None = None,
        steps_completed: int = 0,
        delays: tuple[float, ...] = (),
    ) -> Allocation:
        """Write each node's cluster info and start its container (``delays[i]`` s late)."""
        procs, logs = [], []
        addrs = tuple(n.address for n in self.nodes)
        for node in self.nodes:
            base = self.root / f"node{node.index}"
            info = base / f"info-{allocation}"
            self.standin.write_cluster_info(
                info,
                experiment=dict(experiment),
                hparams=experiment["hyperparameters"],
                slots=slots,
                allocation_id=allocation,
                latest_checkpoint=latest_checkpoint,
                steps_completed=steps_completed,
                container_addrs=addrs,
                container_rank=node.index,
            )
            run_dir = base / f"run-{allocation}"
            for sub in ("upper", "work"):
                (run_dir / sub).mkdir(parents=True, exist_ok=True)
            self.node_tmp(node.index).mkdir(parents=True, exist_ok=True)
            env = self._node_env(allocation)
            env.update(
                RUN_DIR=str(run_dir),
                INFO_DIR=str(info),
                NODE_TMP=str(self.node_tmp(node.index)),
                START_DELAY=str(delays[node.index] if node.index < len(delays) else 0),
            )
            log = base / f"{allocation}.log"
            command = ["unshare", "--mount", "--propagation", "private", "bash", "-c", IN_NODE]
            with log.open("w") as out:
                procs.append(node.popen(command, env=env, stdout=out, stderr=subprocess.STDOUT))
            logs.append(log)
        return Allocation(allocation, procs, logs)

    def _node_env(self, allocation: str) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("MMDET_DET_", "DET_"))}
        for name in (ENV, "TMPDIR", "COCO_TINY", "PYTHONPATH"):
            keep.pop(name, None)
        return {
            **keep,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": f"{REPO}{os.pathsep}{HERE}",  # the context dir + the probe module
            "HOME": "/tmp/home",
            "OMP_NUM_THREADS": "1",
            "DET_USER": "standin-user",
            "DET_SESSION_TOKEN": TOKEN,
            "DET_ALLOCATION_ID": allocation,
            "C10D_PORT": str(C10D_PORT),
            ENV: self.gcs.url,
            "REPO": str(REPO),
            "KEEP_VISIBLE": os.pathsep.join((str(REPO), sys.prefix)),  # code the node runs
        }


def experiment(hparams: Mapping, *, slots_per_trial: int, prefix: str) -> dict:
    """A Determined experiment config whose data and checkpoints live in the GCS emulator only."""
    return {
        "name": "two-node-test",
        "entrypoint": "python3 -m determined.launch.torch_distributed python3 -m trial",
        "resources": {"slots_per_trial": slots_per_trial},
        "searcher": {"name": "single", "metric": "bbox_mAP", "smaller_is_better": False},
        "checkpoint_storage": {"type": "gcs", "bucket": CHECKPOINT_BUCKET, "prefix": prefix},
        "hyperparameters": dict(hparams),
        "data": {
            "source": f"gs://{DATA_BUCKET}/{DATA_PREFIX}",
            "cache": "/tmp/node-cache",  # the same path on every node; each node has its own
            "dest": "/tmp/coco",
            "with_images": True,
        },
    }


@contextmanager
def two_nodes(root: Path, coco_sample: Path, *, count: int = 2) -> Iterator[Cluster]:
    """The network, the services on its host side and the COCO sample in the emulator; all torn
    down (processes, namespaces, links, servers) however the block ends."""
    with node_network(count) as net, running_emulator() as emulator:
        upload_dir(coco_sample, f"gs://{DATA_BUCKET}/{DATA_PREFIX}")
        ensure_bucket(CHECKPOINT_BUCKET)
        gcs = FaultProxy(int(emulator.rsplit(":", 1)[1]), host=net.host_address)
        try:
            with MasterStandin(host=net.host_address) as standin:
                yield Cluster(net, root, standin, gcs)
        finally:
            for node in net.nodes:  # before the servers go: nothing may outlive the test
                node.kill()
            gcs.close()
