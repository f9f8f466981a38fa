"""``invoke bench resume``: time from process start to the first new training step after a resume.

Resumes at a small and a large iteration (20 and 2000) with the trial's loop (samplers positioned,
trial/engine/resume.py) and with mmengine's own ``IterBasedTrainLoop`` (replays N batches), side by side.
Both use the trial's training data loader exactly as trial/settings/config.py builds it for RetinaNet:
InfiniteSampler + AspectRatioBatchSampler, mmdet's real train pipeline (decode, annotations, resize to
1333x800, flip, pack), batch 2, 2 persistent workers, on the COCO sample (real coco-tiny when present).
The model is a one-weight stand-in, so the figure is the data side alone: a real model's first step
adds the same constant to every cell. The resume checkpoints come from one real 1-iteration run
whose iteration counter is set to N (everything else a resume restores is the same size at any N).
Each measurement is a fresh process; sides and N alternate (N=20 first in odd runs, N=2000 first
in even ones) so drift and order hit all cells alike. A last line
times the positioning alone on a dataset of COCO train2017's size (image sizes only) up to N=80,000.
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.registry import MODELS
from mmengine.runner import Runner

import trial.engine.resume  # noqa: F401  (registers the trial's loop and samplers)
from bench.harness import goal, report, results

SMALL_N, LARGE_N = 20, 2000
COCO_TRAIN_IMAGES, COCO_LATE_N = 118_287, 80_000  # a 1x-schedule preemption at 80k of 90k
DEFAULT_RUNS = 3
BATCH, WORKERS = 2, 2
GOAL = 1.05
BENCH = "resume"
SIDES = {"trial": "ResumableIterBasedTrainLoop", "mmengine": "IterBasedTrainLoop"}


def main(runs: int = 0) -> None:
    """Measure every (side, N) ``runs`` times (mmengine at the large N once: it is minutes)."""
    runs = runs or DEFAULT_RUNS
    times: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-resume-") as tmp:
        checkpoints = _make_checkpoints(Path(tmp))
        for index in range(runs):
            order = (SMALL_N, LARGE_N) if index % 2 == 0 else (LARGE_N, SMALL_N)  # no order bias
            for side in SIDES:
                for n in order:
                    if side == "mmengine" and n == LARGE_N and index > 0:
                        continue
                    seconds = _measure(side, checkpoints[n], Path(tmp) / f"{side}-{n}-{index}")
                    times.setdefault((side, n), []).append(seconds)
                    print(
                        f"run {index + 1}/{runs} {side:8s} N={n:<5d}: {seconds:7.2f} s", flush=True
                    )
    median = {key: statistics.median(values) for key, values in times.items()}
    print(_report(median, runs))
    for (side, n), seconds in median.items():
        report(BENCH, "first_step", side=side, n=n, seconds=seconds, runs=len(times[(side, n)]))
    ratio = median[("trial", LARGE_N)] / median[("trial", SMALL_N)]
    report(BENCH, "goal", trial_ratio=ratio, goal=GOAL, met=ratio <= GOAL)
    print(_positioning_cost())


def _positioning_cost() -> str:
    """Seconds to position rank 3 of 8 at N on a dataset of COCO train2017's size (sizes only)."""
    from unittest import mock

    from trial.engine.samplers import (
        ResumableAspectRatioBatchSampler,
        ResumableInfiniteSampler,
        position_batch_sampler,
    )

    dataset = _SizesOnly(COCO_TRAIN_IMAGES)
    cells = []
    for n in (SMALL_N, LARGE_N, COCO_LATE_N):
        with mock.patch("mmengine.dataset.sampler.get_dist_info", lambda: (3, 8)):
            batches = ResumableAspectRatioBatchSampler(ResumableInfiniteSampler(dataset, seed=0), 2)
        started = time.perf_counter()
        position_batch_sampler(batches, n)
        seconds = time.perf_counter() - started
        cells.append(f"N={n}: {seconds:.3f} s")
        report(BENCH, "positioning", n=n, seconds=seconds)
    return (
        f"positioning alone, {COCO_TRAIN_IMAGES} images, rank 3 of 8, batch 2 (index arithmetic): "
        + ", ".join(cells)
    )


class _SizesOnly:
    """Image sizes only, each info unpickled per lookup as mmengine's serialized dataset does."""

    def __init__(self, size: int) -> None:
        info = {"width": 640, "height": 480, "img_path": "x" * 40, "instances": [{}] * 7}
        self._blobs = [pickle.dumps(dict(info, height=480 if i % 3 else 640)) for i in range(size)]

    def __len__(self) -> int:
        return len(self._blobs)

    def get_data_info(self, index: int) -> dict:
        return pickle.loads(self._blobs[index])


def _report(median: dict[tuple[str, int], float], runs: int) -> str:
    from trial.testing.samples import describe_sample, real_coco_sample

    sample = real_coco_sample()
    lines = [
        f"time from process start to the first new training step, resuming at N={SMALL_N} and "
        f"N={LARGE_N}; median of {runs} fresh processes (mmengine at N={LARGE_N}: 1)",
        f"data: {describe_sample(sample) if sample else 'generated shapes set'}; RetinaNet train "
        f"pipeline, batch {BATCH}, {WORKERS} persistent workers; one-weight model",
        f"{'side':10s}{f'N={SMALL_N}':>10s}{f'N={LARGE_N}':>10s}{'ratio':>8s}",
    ]
    for side in SIDES:
        small, large = median[(side, SMALL_N)], median[(side, LARGE_N)]
        lines.append(f"{side:10s}{small:9.2f}s{large:9.2f}s{large / small:8.3f}")
    trial_ratio = median[("trial", LARGE_N)] / median[("trial", SMALL_N)]
    lines.append(
        f"mmengine/trial at N={LARGE_N}: "
        f"{median[('mmengine', LARGE_N)] / median[('trial', LARGE_N)]:.2f}x; "
        f"{goal(f'trial N={LARGE_N}/N={SMALL_N} <= {GOAL}', trial_ratio <= GOAL)} "
        f"({trial_ratio:.3f})"
    )
    return "\n".join(lines)


def _make_checkpoints(root: Path) -> dict[int, Path]:
    """One real checkpoint after 1 iteration, copied with its iteration counter set to each N."""
    work = root / "setup"
    command = [sys.executable, "-m", "bench.resume", "--setup", "--work-dir", str(work)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    base = torch.load(work / "iter_1.pth", map_location="cpu", weights_only=False)
    paths = {}
    for n in (SMALL_N, LARGE_N):
        base["meta"]["iter"] = n
        paths[n] = root / f"resume_at_{n}.pth"
        torch.save(base, paths[n])
    return paths


def _measure(side: str, checkpoint: Path, work_dir: Path) -> float:
    command = [sys.executable, "-m", "bench.resume", "--side", side]
    command += ["--checkpoint", str(checkpoint), "--work-dir", str(work_dir)]
    started = time.time()
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    (first,) = results(out, bench=BENCH, result="first_step_at")
    return first["at"] - started


def _config(work_dir: Path, *, loop: str, max_iters: int) -> Any:
    from trial.runtime.data import coco_dir_paths, default_data
    from trial.settings.config import TrainSettings, build_config, load_base_config, resolve_base
    from trial.testing.samples import real_coco_sample

    sample = real_coco_sample()
    settings = TrainSettings(
        data=coco_dir_paths(sample) if sample else default_data(),
        work_dir=str(work_dir),
        max_iters=max_iters,
        val_interval=max_iters + 1,
        checkpoint_interval=max_iters,
        batch_size=BATCH,
        num_workers=WORKERS,
        log_interval=10,
        pretrained=False,
    )
    cfg = build_config(load_base_config(resolve_base("retinanet")), settings)
    cfg["model"] = dict(type="ResumeBenchModel")
    cfg["train_cfg"]["type"] = loop
    cfg["val_cfg"] = cfg["val_dataloader"] = cfg["val_evaluator"] = None  # training only
    cfg["test_cfg"] = cfg["test_dataloader"] = cfg["test_evaluator"] = None
    return cfg


@MODELS.register_module()
class ResumeBenchModel(BaseModel):
    """One weight and a loss on it: a training step that costs nothing next to the data."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))

    def forward(self, inputs: Any, data_samples: Any = None, mode: str = "tensor") -> Any:
        return {"loss": (self.weight**2).sum()} if mode == "loss" else [self.weight]


class FirstStep(Hook):
    """Prints the wall-clock time the first training step (after the resume) finished, and stops."""

    def after_train_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        report(BENCH, "first_step_at", at=time.time())
        runner.train_loop.stop_training = True


def _run(args: argparse.Namespace) -> None:
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = (
        "1"  # our own checkpoint (see trial/runtime/train.py)
    )
    if args.setup:
        cfg = _config(args.work_dir, loop=SIDES["trial"], max_iters=1)
        cfg["default_hooks"]["checkpoint"] = dict(type="CheckpointHook", interval=1, by_epoch=False)
        Runner.from_cfg(cfg).train()
        return
    resume_at = torch.load(args.checkpoint, map_location="cpu", weights_only=False)["meta"]["iter"]
    cfg = _config(args.work_dir, loop=SIDES[args.side], max_iters=resume_at + 1)
    cfg["load_from"], cfg["resume"] = str(args.checkpoint), True
    runner = Runner.from_cfg(cfg)
    runner.register_hook(FirstStep())
    runner.train()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="one measurement of `invoke bench resume`")
    parser.add_argument("--side", choices=tuple(SIDES))
    parser.add_argument("--setup", action="store_true", help="write the 1-iteration checkpoint")
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--work-dir", type=Path, required=True)
    _run(parser.parse_args())
