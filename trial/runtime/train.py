"""The trial process: build mmdet's Runner from the experiment, attach DetCoreHook, train.

Runs identically on a Determined cluster (``python3 -m determined.launch.torch_distributed python3 -m
trial``) and locally (``python -m trial --local ...``, a dummy core context with checkpoints in a
directory). The Runner is mmdet's own, built exactly as mmdet's tools/train.py builds it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from trial.expconf import deprecations
from trial.runtime.metrics_log import MetricsLog, read_metrics_log
from trial.runtime.weights import use_staged_weights
from trial.settings.config import DataPaths, build_config, load_base_config, resolve_base
from trial.settings.hparams import model_ref, trial_settings
from trial.settings.tensorboard import set_tensorboard_dir
from trial.ui.curves import CURVES_FILE, plot_curves

logger = logging.getLogger("trial")


@dataclass(frozen=True)
class RunRequest:
    """One trial run: what to train, on what data, where, resuming from which checkpoint."""

    experiment: Mapping[str, Any]
    hparams: Mapping[str, Any]
    data: DataPaths
    work_dir: Path
    max_iters: int | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    resume_from: str | None = None
    metrics_log: Path | None = None
    hooks: tuple[Any, ...] = ()  # extra mmengine Hook instances (e.g. a user's or a test's probe)


@dataclass(frozen=True)
class RunResult:
    """What a finished (or preempted) run reports back."""

    steps: int
    preempted: bool
    checkpoint: str | None
    validation: Mapping[str, float]


def train(core_context: Any, request: RunRequest, *, world_size: int = 1) -> RunResult:
    """Train under ``core_context``; returns after the last step or a preemption checkpoint."""
    from mmengine.runner import Runner

    from trial.engine.distributed import BufferSyncHook, dist_timeout, torch_rank
    from trial.engine.hook import DetCoreHook

    if request.metrics_log is not None:
        core_context.train = MetricsLog(core_context.train, request.metrics_log, rank=torch_rank())
    settings = trial_settings(
        request.experiment,
        request.hparams,
        data=request.data,
        work_dir=str(request.work_dir),
        world_size=world_size,
        max_iters=request.max_iters,
        extra_overrides=request.overrides,
        launcher="pytorch" if world_size > 1 else "none",
    )
    for notice in deprecations(request.experiment, source="experiment"):
        logger.warning(notice)
    cfg = build_config(load_base_config(resolve_base(model_ref(request.hparams))), settings)
    local_dir = request.metrics_log.parent if request.metrics_log else request.work_dir
    set_tensorboard_dir(cfg, core_context, local_dir)
    use_staged_weights(cfg, request.experiment.get("data"))  # data.weights_mirror: node cache
    buffer_sync = None
    if world_size > 1:
        dist_backend = _ranks_setup(cfg, timeout_s=dist_timeout(request.hparams))
        buffer_sync = BufferSyncHook()
        request = replace(request, hooks=(buffer_sync, *request.hooks))
        logger.info("rank %d of %d (%s)", torch_rank(), world_size, dist_backend)
    if request.resume_from:
        cfg["load_from"] = _download_checkpoint(core_context, request.resume_from, request.work_dir)
        cfg["resume"] = True
    runner = Runner.from_cfg(cfg)
    hook = DetCoreHook(
        core_context,
        checkpoint_interval=settings.checkpoint_interval,
        report_interval=settings.log_interval,
        checkpoint_metadata={"model": model_ref(request.hparams)},
        before_save=buffer_sync.sync if buffer_sync else None,
    )
    runner.register_hook(hook)
    for extra in request.hooks:
        runner.register_hook(extra)
    with trusted_checkpoint_loading():
        runner.train()
    if request.metrics_log is not None and torch_rank() == 0:  # local: beside result.json
        plot_curves(
            read_metrics_log(request.metrics_log), request.metrics_log.with_name(CURVES_FILE)
        )
    return RunResult(runner.iter, hook.preempted, hook.last_checkpoint, hook.last_validation)


def _ranks_setup(cfg: Any, *, timeout_s: int | None) -> str:
    """Adapt ``cfg`` to many ranks and join the process group; returns the backend."""
    import torch

    from trial.engine.distributed import apply_distributed, backend, init_process_group

    dist_backend = backend(cuda=torch.cuda.is_available())
    apply_distributed(cfg, dist_backend=dist_backend, timeout_s=timeout_s)
    init_process_group(dist_backend, timeout_s=timeout_s)
    return dist_backend


@contextlib.contextmanager
def trusted_checkpoint_loading() -> Iterator[None]:
    """Let mmengine's ``torch.load`` read full checkpoints on torch >= 2.6.

    mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; torch 2.6 flipped the default to
    True, so resuming an mmengine checkpoint (message hub, numpy scalars) raises UnpicklingError.
    The trial only loads checkpoints it wrote itself into the experiment's own storage, so it opts
    out for the duration of training, and restores the caller's environment afterwards.
    """
    previous = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = previous


def _download_checkpoint(core_context: Any, storage_id: str, work_dir: Path) -> str:
    from trial.engine.hook import CHECKPOINT_FILE

    target = work_dir / "resume" / storage_id
    if not (target / CHECKPOINT_FILE).exists():
        core_context.checkpoint.download(storage_id, str(target))
    logger.info("resuming from checkpoint %s", storage_id)
    return str(target / CHECKPOINT_FILE)


class SignalPreemption:
    """Off-cluster stand-in for the master's preemption signal: the first SIGTERM or SIGINT asks
    the trial to checkpoint and stop cleanly (exit 0, resumable with ``--resume``); a second
    signal falls back to the default behaviour."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.requested = False
        self._previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }

    def should_preempt(self, auto_ack: bool = True) -> bool:
        return self._inner.should_preempt(auto_ack) or self.requested

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _on_signal(self, signum: int, frame: Any) -> None:
        logger.warning(
            "received %s: checkpointing and stopping at the next step", signal.Signals(signum).name
        )
        self.requested = True
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
