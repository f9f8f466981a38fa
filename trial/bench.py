"""``invoke bench trial``: the bundled trial vs plain mmengine Runner, same mmdet config, interleaved.

"Plain" is what mmdet's tools/train.py does: ``Runner.from_cfg(cfg).train()``. "Trial" is the same
config and Runner plus DetCoreHook on a real (local) Determined core context: metric reports,
preemption checks every iteration, progress, and a checkpoint through Determined's storage. Each run
is a fresh process; sides alternate (plain, trial, plain, ...) so drift hits both. The per-run figure
is the median iteration time after warm-up; the result is the median over runs and their ratio.
"""

from __future__ import annotations

import argparse
import json
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


def main(runs: int = 0) -> None:
    """Run both sides ``runs`` times (default 3), interleaved, and print medians and their ratio."""
    runs = runs or DEFAULT_RUNS
    times: dict[str, list[float]] = {"plain": [], "trial": []}
    with tempfile.TemporaryDirectory(prefix="bench-trial-") as tmp:
        for index in range(runs):
            for side in ("plain", "trial"):
                seconds = _run_side(side, Path(tmp) / f"{side}{index}")
                times[side].append(seconds)
                print(f"run {index + 1}/{runs} {side:5s}: {seconds:.3f} s/iter", flush=True)
    plain, trial = (statistics.median(times[s]) for s in ("plain", "trial"))
    print(
        f"RetinaNet R50-FPN {IMAGE_SCALE[0]} px, batch {BATCH}, {ITERS} iters ({WARMUP} warm-up), "
        f"{runs} runs per side, interleaved, on the generated shapes set (the same data everywhere)\n"
        f"plain mmengine Runner: {plain:.3f} s/iter (median)\n"
        f"bundled trial        : {trial:.3f} s/iter (median)\n"
        f"ratio trial/plain    : {trial / plain:.3f}"
    )


def _run_side(side: str, work_dir: Path) -> float:
    command = [sys.executable, "-m", "trial.bench", "--side", side, "--work-dir", str(work_dir)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["median_s_per_iter"]


def _one_run(side: str, work_dir: Path) -> float:
    import determined as det
    from mmengine.runner import Runner

    import trial.metrics
    import trial.resume  # noqa: F401
    from trial.config import TrainSettings, build_config, load_base_config, resolve_base
    from trial.data import default_data
    from trial.hook import DetCoreHook

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
    )
    cfg = build_config(load_base_config(resolve_base(MODEL)), settings)
    cfg["val_cfg"] = cfg["val_dataloader"] = cfg["val_evaluator"] = None  # time training only
    cfg["test_cfg"] = cfg["test_dataloader"] = cfg["test_evaluator"] = None
    runner = Runner.from_cfg(cfg)
    if side == "trial":
        with det.core.init(checkpoint_storage=str(work_dir / "checkpoints")) as core:
            runner.register_hook(DetCoreHook(core, checkpoint_interval=ITERS, report_interval=10))
            runner.train()
    else:
        runner.train()
    history = runner.message_hub.get_scalar("train/time").data[0]
    return statistics.median(float(t) for t in history[WARMUP:])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="one side of `invoke bench trial`")
    parser.add_argument("--side", choices=("plain", "trial"), required=True)
    parser.add_argument("--work-dir", required=True)
    args = parser.parse_args()
    median = _one_run(args.side, Path(args.work_dir))
    print(json.dumps({"side": args.side, "median_s_per_iter": median}))
