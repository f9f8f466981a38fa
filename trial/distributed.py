"""Many ranks: what a trial rank needs beyond the Runner's own ``launcher='pytorch'`` support.

Every rank is started by torch's launcher (``torch.distributed.run``; on a cluster through
``determined.launch.torch_distributed``) and builds Determined's DistributedContext from torch's
environment. On top of mmengine this module supplies what its pytorch launcher lacks on CPU
(gloo), result collection without a shared filesystem, identical BN buffers on every rank, and a
preemption decision all ranks agree on.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import struct
from pathlib import Path
from typing import Any

from mmengine.hooks import Hook

GLOO = "gloo"
NCCL = "nccl"
# mmengine's collect_results: 'gpu' gathers result parts with all_gather_object over the process
# group (gloo tensors on CPU, nccl on GPU); 'cpu' writes part files into a temp dir made by rank 0,
# which needs a filesystem shared by every rank and so breaks across nodes (mmengine #557).
COLLECT_DEVICE = "gpu"
EVALUATORS = ("val_evaluator", "test_evaluator")
GLOO_IFNAME = "GLOO_SOCKET_IFNAME"
_SIOCGIFADDR = 0x8915

logger = logging.getLogger("trial")


def torch_world_size() -> int:
    """WORLD_SIZE as torch's launcher set it (1 outside a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def torch_rank() -> int:
    """RANK as torch's launcher set it (0 outside a launcher)."""
    return int(os.environ.get("RANK", "0"))


def backend(*, cuda: bool) -> str:
    """nccl on GPUs, gloo on CPU."""
    return NCCL if cuda else GLOO


def apply_distributed(cfg: Any, *, dist_backend: str) -> None:
    """Adapt a built trial config to many ranks (pure: edits ``cfg`` only).

    - ``env_cfg.dist_cfg.backend``: gloo on CPU (mmengine's default nccl needs GPUs);
    - on CPU the model wrapper gets ``device_ids=None``: mmengine passes ``[LOCAL_RANK]``, which
      torch's DistributedDataParallel refuses for a CPU module;
    - evaluators collect results through collectives, never through a shared temp dir.
    """
    cfg["env_cfg"] = dict(cfg.get("env_cfg") or {}, dist_cfg=dict(backend=dist_backend))
    if dist_backend == GLOO:
        cfg["model_wrapper_cfg"] = dict(
            type="MMDistributedDataParallel",
            device_ids=None,
            broadcast_buffers=False,
            find_unused_parameters=cfg.get("find_unused_parameters", False),
        )
    for name in EVALUATORS:
        evaluator = cfg.get(name)
        for metric in evaluator if isinstance(evaluator, list) else [evaluator]:
            if isinstance(metric, dict):
                metric["collect_device"] = COLLECT_DEVICE


def init_process_group(dist_backend: str) -> None:
    """Join torch's process group from the launcher's environment, when mmengine cannot.

    mmengine 0.10.7's ``init_dist('pytorch')`` calls ``torch.cuda.set_device`` first, which a CPU
    build of torch does not have; the Runner skips its own init when a group already exists. On
    GPUs mmengine's init runs unchanged (it also pins each rank to its LOCAL_RANK device).
    """
    import torch.distributed as dist

    use_routed_interface()
    if dist_backend == GLOO and not dist.is_initialized():
        dist.init_process_group(backend=GLOO)


def use_routed_interface() -> str | None:
    """Across nodes, have gloo use the interface that reaches the chief; return its name.

    Unless told (``GLOO_SOCKET_IFNAME``), gloo advertises the address the host name resolves to,
    which is 127.0.0.1 or 127.0.1.1 on many hosts (Debian's /etc/hosts, host networking): the
    other node's ranks are then told to connect to their own loopback and the group never forms
    (``connectFullMesh failed ... remote=[127.0.0.1]``). One node, or an explicit setting: unchanged.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if os.environ.get(GLOO_IFNAME) or world == int(os.environ.get("LOCAL_WORLD_SIZE", world)):
        return os.environ.get(GLOO_IFNAME)
    name = route_interface(os.environ["MASTER_ADDR"])
    if name:
        os.environ[GLOO_IFNAME] = name
        logger.info("gloo: using interface %s, the route to the chief", name)
    return name


def route_interface(address: str) -> str | None:
    """The name of the local interface whose address the kernel uses to reach ``address``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((socket.gethostbyname(address), 9))  # UDP: picks a route, sends nothing
        local = probe.getsockname()[0]
        for _, name in socket.if_nameindex():
            with contextlib.suppress(OSError):
                packed = struct.pack("256s", name.encode()[:15])
                raw = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, packed)
                if socket.inet_ntoa(raw[20:24]) == local:
                    return name
    return None


class BufferSyncHook(Hook):
    """Average model buffers (BN running stats) over all ranks after every training step.

    DDP keeps parameters identical but not buffers (mmengine wraps with ``broadcast_buffers=False``),
    so without this each rank would validate its shard with its own BN statistics and the
    checkpoint (rank 0's) would not be the model that was validated. Averaging running stats
    changes no gradient (training-mode BN uses batch statistics); it costs one all-reduce of the
    buffers per step. Priority LOW: after the optimizer step and LoggerHook, before DetCoreHook
    (VERY_LOW) checkpoints.
    """

    priority = "LOW"

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        from mmengine.dist import all_reduce_params

        all_reduce_params(runner.model.buffers(), op="mean")


class RankPreemption:
    """A preempt context whose answer every rank shares.

    Wraps the trial's preempt context; a rank asks for preemption when the wrapped context does
    (a signal it received, or the master's decision broadcast by the chief), or when
    ``request_file`` exists (how ``python -m trial --local --nproc N`` passes on a SIGTERM without
    signalling torch's launcher, which would treat it as fatal). The ranks then agree through the
    DistributedContext's allgather, so all of them checkpoint and stop at the same step.
    """

    def __init__(self, inner: Any, distributed: Any, *, request_file: Path | None = None) -> None:
        self._inner = inner
        self._dist = distributed
        self._request_file = request_file

    def should_preempt(self, auto_ack: bool = True) -> bool:
        local = bool(self._inner.should_preempt(auto_ack))
        if not local and self._request_file is not None:
            local = self._request_file.exists()
        return any(self._dist.allgather(local))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
