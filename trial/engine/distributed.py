"""Many ranks: what a trial rank needs beyond the Runner's own ``launcher='pytorch'`` support.

Every rank is started by torch's launcher (``torch.distributed.run``; on a cluster through
``determined.launch.torch_distributed``) and builds Determined's DistributedContext from torch's
environment. On top of mmengine this module supplies what its pytorch launcher lacks on CPU
(gloo), gloo's interface across nodes, a timeout on every collective, result collection without
a shared filesystem, identical BN buffers wherever they are used, and a preemption decision all
ranks agree on without a blocking round trip per step.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import struct
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from mmengine.hooks import Hook

from errors import ConfigError

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


def dist_timeout(hparams: Mapping[str, Any]) -> int | None:
    """``hyperparameters.dist_timeout``: seconds any collective may wait for a peer (None: torch's
    default, 30 min on gloo, 10 min on nccl). It bounds how long a rank waits for a dead node."""
    value = hparams.get("dist_timeout")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"hyperparameters.dist_timeout must be a positive whole number of seconds, got {value!r}"
        )
    return value


def apply_distributed(cfg: Any, *, dist_backend: str, timeout_s: int | None = None) -> None:
    """Adapt a built trial config to many ranks (pure: edits ``cfg`` only).

    - ``env_cfg.dist_cfg.backend``: gloo on CPU (mmengine's default nccl needs GPUs);
    - on CPU the model wrapper gets ``device_ids=None``: mmengine passes ``[LOCAL_RANK]``, which
      torch's DistributedDataParallel refuses for a CPU module;
    - evaluators collect results through collectives, never through a shared temp dir;
    - ``timeout_s`` (mmengine's ``env_cfg.dist_cfg.timeout``) bounds every collective.
    """
    dist_cfg = dict(backend=dist_backend, **({"timeout": timeout_s} if timeout_s else {}))
    cfg["env_cfg"] = dict(cfg.get("env_cfg") or {}, dist_cfg=dist_cfg)
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


def init_process_group(dist_backend: str, *, timeout_s: int | None = None) -> None:
    """Join torch's process group from the launcher's environment, when mmengine cannot.

    mmengine 0.10.7's ``init_dist('pytorch')`` calls ``torch.cuda.set_device`` first, which a CPU
    build of torch does not have; the Runner skips its own init when a group already exists. On
    GPUs mmengine's init runs unchanged (it also pins each rank to its LOCAL_RANK device).
    """
    import torch.distributed as dist

    use_routed_interface()
    if dist_backend == GLOO and not dist.is_initialized():
        dist.init_process_group(backend=GLOO, timeout=_timedelta(timeout_s))


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


def _timedelta(seconds: int | None) -> timedelta | None:
    return timedelta(seconds=seconds) if seconds else None


class BufferSyncHook(Hook):
    """Average model buffers (BN running stats) over all ranks before validation and checkpoints.

    DDP keeps parameters identical but not buffers (mmengine wraps with ``broadcast_buffers=False``),
    so without this each rank would validate its shard with its own BN statistics and the
    checkpoint (rank 0's) would not be the model that was validated. Averaging only when they are
    used is exact: a running stat is an affine update of itself with the same coefficients on
    every rank (``(1 - m) * r + m * batch_stat``), so the mean over ranks evolves the same whether
    it is taken every step or once at the end — and training-mode BN uses batch statistics, so
    no gradient depends on it. ``sync`` runs on every rank before DetCoreHook stores a checkpoint
    (its ``before_save``), before every validation and after the last step; one all-reduce each
    time, none per step. Exception: with an EMA hook (which averages buffers into its own model
    every step) the buffers are averaged every step, as before. Priority LOW: after the optimizer
    step and LoggerHook, before DetCoreHook (VERY_LOW).
    """

    priority = "LOW"

    def __init__(self) -> None:
        self.every_step = False
        self._stale = False

    def before_train(self, runner) -> None:
        self.every_step = any(type(h).__name__.endswith("EMAHook") for h in runner.hooks)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._stale = True
        if self.every_step:
            self.sync(runner)

    def before_val(self, runner) -> None:
        self.sync(runner)

    def after_train(self, runner) -> None:
        self.sync(runner)

    def sync(self, runner) -> None:
        """Average the buffers now if a step changed them since the last average (every rank)."""
        if self._stale:
            from mmengine.dist import all_reduce_params

            all_reduce_params(runner.model.buffers(), op="mean")
            self._stale = False


class RankPreemption:
    """A preempt context whose answer every rank shares, agreed without holding up a step.

    A rank raises its flag when the wrapped context says so — on the chief only: it alone asks
    Determined (``PreemptMode.ChiefOnly``; the master's answer is polled in the background) — or
    when ``request_file`` exists (how ``python -m trial --local --nproc N`` passes on a SIGTERM
    without signalling torch's launcher, which would treat it as fatal). The flags are combined
    by an all-reduce (max) on a gloo group, started at one call and read at the next: it runs
    while the next step computes, every rank reads the same answer at the same step (so all of
    them checkpoint and stop together, one step after the signal), and waiting for it is bounded
    by the group's timeout (``dist_timeout``). Determined's own agreement (a ZMQ broadcast from
    the chief every call) blocks each step and waits forever for a vanished peer.
    """

    def __init__(
        self, inner: Any, *, request_file: Path | None = None, timeout_s: int | None = None
    ) -> None:
        self._inner = inner
        self._request_file = request_file
        self._timeout_s = timeout_s
        self._group: Any = None
        self._flag: Any = None
        self._pending: Any = None
        self._decided = False

    def should_preempt(self, auto_ack: bool = True) -> bool:
        import torch
        import torch.distributed as dist

        if self._decided:
            return True
        if self._pending is not None:
            self._pending.wait()
            self._decided = bool(self._flag.item())
            if self._decided:
                return True
        if self._group is None:  # a collective: every rank reaches its first call together
            self._group = dist.new_group(backend=GLOO, timeout=_timedelta(self._timeout_s))
        local = dist.get_rank() == 0 and bool(self._inner.should_preempt(auto_ack))
        if not local and self._request_file is not None:
            local = self._request_file.exists()
        self._flag = torch.tensor([int(local)], dtype=torch.int32)
        self._pending = dist.all_reduce(
            self._flag, op=dist.ReduceOp.MAX, group=self._group, async_op=True
        )
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
