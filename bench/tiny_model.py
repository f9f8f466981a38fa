"""The tiny model of ``invoke bench trial``'s per-step line: a step of about a millisecond, so
what the trial adds per step (hooks, collectives, reports) is not lost in the model's time."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner

from trial.engine.distributed import torch_world_size


class TinyModel(BaseModel):
    """Two linear layers around a BatchNorm (so there are buffers to average)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.Linear(16, 1)
        )

    def forward(self, inputs, labels=None, mode: str = "tensor"):
        out = self.net(inputs).squeeze(1)
        if mode == "loss":
            return {"loss": ((out - labels) ** 2).mean()}
        return out


class StepClock(Hook):
    """``time.perf_counter()`` at the start of every training step, before any other hook."""

    priority = "HIGHEST"

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self.stamps.append(time.perf_counter())


def tiny_config(work_dir: Path, *, iters: int, batch: int, log_interval: int) -> dict[str, Any]:
    """Runner arguments (without the model) for ``iters`` steps on 64 random samples. One
    intra-op thread: a millisecond step on a thread pool measures scheduling, not the trial."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    data = [dict(inputs=torch.randn(8, generator=gen), labels=torch.randn(())) for _ in range(64)]
    return dict(
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=data,
            sampler=dict(type="InfiniteSampler", shuffle=True),
            batch_size=batch,
            num_workers=0,
            collate_fn=dict(type="default_collate"),
        ),
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=iters),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.01)),
        default_hooks=dict(checkpoint=None, logger=dict(type="LoggerHook", interval=log_interval)),
        log_processor=dict(window_size=log_interval, by_epoch=False),
        launcher="pytorch" if torch_world_size() > 1 else "none",
        env_cfg=dict(dist_cfg=dict(backend="gloo")),
        default_scope="mmengine",
    )


def tiny_run(
    cfg: dict[str, Any], name: str, *, warmup: int, add_trial: Callable | None = None
) -> float:
    """Train the tiny model once; the mean seconds per step after ``warmup`` steps."""
    run_cfg = copy.deepcopy(cfg)
    wrapper = run_cfg.pop("model_wrapper_cfg", None)  # read by the Runner from its ``cfg`` only
    run_cfg.update(model=TinyModel(), experiment_name=name, cfg=dict(model_wrapper_cfg=wrapper))
    runner = Runner(**run_cfg)
    clock = StepClock()
    runner.register_hook(clock)
    if add_trial is not None:
        add_trial(
            runner, checkpoint_interval=0, report_interval=cfg["log_processor"]["window_size"]
        )
    runner.train()
    stamps = clock.stamps[warmup:]
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)
