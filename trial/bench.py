"""``invoke bench trial``: the bundled trial vs plain mmengine Runner, same mmdet config, interleaved.

"Plain" is what mmdet's tools/train.py does: ``Runner.from_cfg(cfg).train()``. "Trial" is the same
config and Runner plus DetCoreHook on a real (local) Determined core context: metric reports,
preemption checks every iteration, progress, and a checkpoint through Determined's storage. Each run
is a fresh process; sides alternate (plain, trial, plain, ...) so drift hits both. The per-run figure
is the median iteration time after warm-up; the result is the median over runs and their ratio.

The 2-rank line runs both sides as 2 ranks under torch's launcher (gloo on CPU), batch 2 per rank.
Both get the same CPU adaptations (trial/distributed.py: gloo, DDP without device ids, collective
result collection), without which plain mmengine cannot run 2 CPU ranks at all; the trial side adds
DetCoreHook, Determined's DistributedContext with the per-step preemption agreement, and the
per-step BN buffer average (BufferSyncHook).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

MODEL = "retinanet"  # RetinaNet R50-FPN
IMAGE_SCALE = (320, 320)
BATCH = 2
ITERS = 24
WARMUP = 4
DEFAULT_RUNS = 3
RANKS = (1, 2)


def main(runs: int = 0) -> None:
    """Run both sides ``runs`` times (default 3), interleaved, on 1 and on 2 ranks; print medians
    and their ratios."""
    runs = runs or DEFAULT_RUNS
    lines = [
        f"RetinaNet R50-FPN {IMAGE_SCALE[0]} px, batch {BATCH} per rank, {ITERS} iters "
        f"({WARMUP} warm-up), {runs} runs per side, interleaved, on the generated shapes set "
        "(the same data everywhere)"
    ]
    for ranks in RANKS:
        plain, trial = _compare(runs, ranks)
        lines += [
            f"{ranks} rank{'s' if ranks > 1 else ''}: plain mmengine Runner {plain:.3f} s/iter, "
            f"bundled trial {trial:.3f} s/iter (medians), ratio trial/plain {trial / plain:.3f}"
        ]
    print("\n".join(lines))


def _compare(runs: int, ranks: int) -> tuple[float, float]:
    times: dict[str, list[float]] = {"plain": [], "trial": []}
    with tempfile.TemporaryDirectory(prefix="bench-trial-") as tmp:
        for index in range(runs):
            for side in ("plain", "trial"):
                seconds = _run_side(side, Path(tmp) / f"{side}{index}", ranks=ranks)
                times[side].append(seconds)
                print(
                    f"{ranks} rank(s), run {index + 1}/{runs} {side:5s}: {seconds:.3f} s/iter",
                    flush=True,
                )
    return statistics.median(times["plain"]), statistics.median(times["trial"])


def _run_side(side: str, work_dir: Path, *, ranks: int) -> float:
    launcher = [sys.executable]
    if ranks > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
    command = [*launcher, "-m", "trial.bench", "--side", side, "--work-dir", str(work_dir)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result = next(line for line in out.splitlines() if line.startswith('{"side"'))
    return json.loads(result)["median_s_per_iter"]


def _one_run(side: str, work_dir: Path) -> float:
    import determined as det
    from mmengine.runner import Runner

    from trial.config import TrainSettings, build_config, load_base_config, resolve_base
    from trial.data import default_data
    from trial.distributed import torch_world_size
    from trial.hook import DetCoreHook

    ranks = torch_world_size()

    settings = TrainSettings(
        data=default_data(),
        work_dir=str(work_dir),
        max_iters=ITERS,
        val_interval=ITERS + 1,
        checkpoint_interval=ITERS,
        batch_size=BATCH,
        num_workers=2,
        image_scale=IMAGE_SCALE,
        log_interval=10,
        pretrained=False,
        launcher="pytorch" if ranks > 1 else "none",
    )
    cfg = build_config(load_base_config(resolve_base(MODEL)), settings)
    cfg["val_cfg"] = cfg["val_dataloader"] = cfg["val_evaluator"] = None  # time training only
    cfg["test_cfg"] = cfg["test_dataloader"] = cfg["test_evaluator"] = None
    if ranks > 1:
        _join_ranks(cfg)
    distributed = None
    if ranks > 1 and side == "trial":
        distributed = det.core.DistributedContext.from_torch_distributed()
    runner = Runner.from_cfg(cfg)
    if side == "trial":
        storage = str(work_dir / "checkpoints")
        with det.core.init(checkpoint_storage=storage, distributed=distributed) as core:
            if distributed is not None:
                from trial.distributed import BufferSyncHook, RankPreemption

                core.preempt = RankPreemption(core.preempt, distributed)
                runner.register_hook(BufferSyncHook())
            runner.register_hook(DetCoreHook(core, checkpoint_interval=ITERS, report_interval=10))
            runner.train()
    else:
        runner.train()
    history = runner.message_hub.get_scalar("train/time").data[0]
    return statistics.median(float(t) for t in history[WARMUP:])


def _join_ranks(cfg) -> None:
    """The adaptations both sides need to run many ranks (on CPU: gloo, DDP without device ids)."""
    import torch

    from trial.distributed import apply_distributed, backend, init_process_group

    dist_backend = backend(cuda=torch.cuda.is_available())
    apply_distributed(cfg, dist_backend=dist_backend)
    init_process_group(dist_backend)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="one side of `invoke bench trial`")
    parser.add_argument("--side", choices=("plain", "trial"), required=True)
    parser.add_argument("--work-dir", required=True)
    args = parser.parse_args()
    median = _one_run(args.side, Path(args.work_dir))
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"side": args.side, "median_s_per_iter": median}), flush=True)
