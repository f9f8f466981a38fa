"""``invoke bench trial``: the bundled trial vs plain mmengine Runner, side by side, interleaved.

"Plain" is what mmdet's tools/train.py does: ``Runner.from_cfg(cfg).train()``. "Trial" is the same
config and Runner plus what the trial adds: DetCoreHook on a real (local) Determined core context
(metric reports, the preemption check every iteration, progress, a checkpoint through Determined's
storage) and, on many ranks, Determined's DistributedContext, the preemption agreement and the BN
buffer average (trial/engine/distributed.py). Two kinds of lines, each on three layouts — 1 rank, 2
local ranks (torch's launcher, gloo on CPU), and 2 nodes × 1 rank (two network namespaces,
trial/testing/nodes.py; root only, skipped with the reason elsewhere):

- RetinaNet R50-FPN: each run is a fresh process; sides alternate (plain, trial, plain, ...) so
  drift hits both; a run's figure is the median iteration time after warm-up; the line gives the
  median over runs and the ratio trial/plain.
- The milliseconds the trial adds per step, independent of the model: a tiny model (two linear
  layers and a BatchNorm, batch 2) whose step is about a millisecond, plain and trial alternating
  in one process per layout; a run's figure is the mean step time over all its steps after
  warm-up (reports every ``log_interval`` included); the line gives the difference of the medians.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trial.runtime.ranks import free_det_ports

MODEL = "retinanet"  # RetinaNet R50-FPN
IMAGE_SCALE = (320, 320)
BATCH = 2
ITERS = 24
WARMUP = 4
DEFAULT_RUNS = 3
TINY_ITERS = 400
TINY_WARMUP = 50
TINY_LOG_INTERVAL = 10
LAYOUTS = (("1 rank", 1, 1), ("2 ranks", 1, 2), ("2 nodes", 2, 1))  # (name, nodes, ranks/node)
LINES = ("retinanet", "overhead")
C10D_PORT = 29400


def main(
    runs: int = 0, *, lines: tuple[str, ...] = LINES, layouts: tuple[str, ...] | None = None
) -> None:
    """Run both sides ``runs`` times (default 3) on every layout (or those named in
    ``layouts``); print medians and ratios."""
    runs = runs or DEFAULT_RUNS
    out = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # tear the namespaces down first
    with _two_nodes() as (net, why_not):
        if "retinanet" in lines:
            out.append(
                f"RetinaNet R50-FPN {IMAGE_SCALE[0]} px, batch {BATCH} per rank, {ITERS} iters "
                f"({WARMUP} warm-up), {runs} runs per side, interleaved, on the generated shapes "
                "set (the same data everywhere)"
            )
            out += _layout_lines(
                layouts, net, why_not, lambda layout: _retinanet_line(runs, layout, net)
            )
        if "overhead" in lines:
            out.append(
                f"what the trial adds per step: tiny model, batch {BATCH} per rank, {TINY_ITERS} "
                f"steps ({TINY_WARMUP} warm-up), reports every {TINY_LOG_INTERVAL}, {runs} runs "
                "per side alternating in one process"
            )
            out += _layout_lines(
                layouts, net, why_not, lambda layout: _overhead_line(runs, layout, net)
            )
    print("\n".join(out))


def _layout_lines(layouts, net: Any, why_not: str | None, line) -> list[str]:
    """``name: line((nodes, ranks per node))`` for each chosen layout (2 nodes: when possible)."""
    out = []
    for name, nodes, per_node in LAYOUTS:
        if layouts is not None and name not in layouts:
            continue
        out.append(
            f"{name}: "
            + (f"skipped ({why_not})" if nodes > 1 and net is None else line((nodes, per_node)))
        )
    return out


def _retinanet_line(runs: int, layout: tuple[int, int], net: Any) -> str:
    plain, trial = _compare(runs, layout, net)
    return (
        f"plain mmengine Runner {plain:.3f} s/iter, bundled trial {trial:.3f} s/iter (medians), "
        f"ratio trial/plain {trial / plain:.3f}"
    )


def _overhead_line(runs: int, layout: tuple[int, int], net: Any) -> str:
    with tempfile.TemporaryDirectory(prefix="bench-trial-") as tmp:
        args = ["--model", "tiny", "--side", "both", "--runs", str(runs)]
        result = _launch(args, layout, Path(tmp), net)
    plain = statistics.median(result["plain"]) * 1e3
    trial = statistics.median(result["trial"]) * 1e3
    return (
        f"plain {plain:.3f} ms/step, trial {trial:.3f} ms/step (medians), "
        f"the trial adds {trial - plain:+.3f} ms/step"
    )


def _compare(runs: int, layout: tuple[int, int], net: Any) -> tuple[float, float]:
    times: dict[str, list[float]] = {"plain": [], "trial": []}
    with tempfile.TemporaryDirectory(prefix="bench-trial-") as tmp:
        for index in range(runs):
            for side in ("plain", "trial"):
                args = ["--model", MODEL, "--side", side]
                result = _launch(args, layout, Path(tmp) / f"{side}{index}", net)
                seconds = result[side][0]
                times[side].append(seconds)
                print(
                    f"{layout}, run {index + 1}/{runs} {side:5s}: {seconds:.3f} s/iter", flush=True
                )
    return statistics.median(times["plain"]), statistics.median(times["trial"])


def _launch(args: list[str], layout: tuple[int, int], work_dir: Path, net: Any) -> dict:
    """Run ``python -m bench.trial ARGS`` on ``layout``; return rank 0's JSON result."""
    nodes, per_node = layout
    module = ["-m", "bench.trial", *args]
    if nodes == 1:
        launcher = [sys.executable]
        if per_node > 1:
            launcher += ["-m", "torch.distributed.run", "--standalone"]
            launcher += ["--nproc-per-node", str(per_node)]
        command = [*launcher, *module, "--work-dir", str(work_dir)]
        env = {**free_det_ports(), **os.environ}  # several multi-rank runs may share a machine
        out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
        return _result(out)
    chief = net.nodes[0].address
    procs = []
    for node in net.nodes[:nodes]:
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes),
            "--node-rank", str(node.index), "--nproc-per-node", str(per_node),
            "--master-addr", chief, "--master-port", str(C10D_PORT),
            *module, "--work-dir", str(work_dir / f"node{node.index}"),
        ]  # fmt: skip
        env = {**os.environ, "DET_CHIEF_IP": chief, "OMP_NUM_THREADS": "1"}
        procs.append(node.popen(command, env=env, stdout=subprocess.PIPE, text=True))
    outputs = [proc.communicate()[0] for proc in procs]
    if any(proc.returncode for proc in procs):
        raise RuntimeError(f"a 2-node bench run failed: exit codes {[p.returncode for p in procs]}")
    return _result(outputs[0])


def _result(stdout: str) -> dict:
    return json.loads(next(line for line in stdout.splitlines() if line.startswith('{"plain"')))


@contextlib.contextmanager
def _two_nodes() -> Iterator[tuple[Any, str | None]]:
    from trial.testing.nodes import NodesUnavailable, node_network

    try:
        with node_network(2) as net:
            yield net, None
    except NodesUnavailable as err:
        yield None, str(err)


# --- one process of a layout (``python -m bench.trial``) -----------------------------------------


def _retinanet_run(side: str, work_dir: Path) -> float:
    """One RetinaNet run of ``side``; the median iteration time after warm-up (rank 0's timer)."""
    from mmengine.runner import Runner

    from trial.settings.config import TrainSettings, build_config, load_base_config, resolve_base
    from trial.runtime.data import default_data
    from trial.engine.distributed import torch_world_size

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
    with _sides(cfg, work_dir) as add_trial:
        runner = Runner.from_cfg(cfg)
        if side == "trial":
            add_trial(runner, checkpoint_interval=ITERS, report_interval=10)
        runner.train()
    history = runner.message_hub.get_scalar("train/time").data[0]
    return statistics.median(float(t) for t in history[WARMUP:])


def _tiny_runs(runs: int, work_dir: Path) -> dict[str, list[float]]:
    """``runs`` x (plain, trial) of the tiny model in this process; mean s/step of each."""
    from bench.tiny_model import tiny_config, tiny_run

    times: dict[str, list[float]] = {"plain": [], "trial": []}
    cfg = tiny_config(work_dir, iters=TINY_ITERS, batch=BATCH, log_interval=TINY_LOG_INTERVAL)
    with _sides(cfg, work_dir) as add_trial:
        for index in range(runs):
            for side in ("plain", "trial"):
                extra = add_trial if side == "trial" else None
                seconds = tiny_run(cfg, f"{side}{index}", warmup=TINY_WARMUP, add_trial=extra)
                times[side].append(seconds)
    return times


@contextlib.contextmanager
def _sides(cfg: Any, work_dir: Path):
    """Adapt ``cfg`` to this process's ranks (both sides need it); yield ``add_trial(runner, ...)``,
    which registers what the trial adds, on one Determined core context for the process."""
    import determined as det

    from trial.engine.distributed import torch_world_size

    ranks = torch_world_size()
    distributed = None
    if ranks > 1:
        _join_ranks(cfg)
        distributed = det.core.DistributedContext.from_torch_distributed()
    storage = str(work_dir / "checkpoints")
    modes = det.core.PreemptMode
    mode = modes.WorkersAskChief if distributed is None else modes.ChiefOnly
    with det.core.init(
        checkpoint_storage=storage, distributed=distributed, preempt_mode=mode
    ) as core:
        preempt = core.preempt

        def add_trial(runner, **hook_args) -> None:  # what trial/runtime/train.py and __main__.py add
            from trial.engine.hook import DetCoreHook

            if distributed is not None:
                from trial.engine.distributed import BufferSyncHook, RankPreemption

                core.preempt = RankPreemption(preempt)
                buffers = BufferSyncHook()
                runner.register_hook(buffers)
                hook_args["before_save"] = buffers.sync
            runner.register_hook(DetCoreHook(core, **hook_args))

        yield add_trial


def _join_ranks(cfg) -> None:
    """The adaptations both sides need to run many ranks (on CPU: gloo, DDP without device ids)."""
    import torch

    from trial.engine.distributed import apply_distributed, backend, init_process_group

    dist_backend = backend(cuda=torch.cuda.is_available())
    apply_distributed(cfg, dist_backend=dist_backend)
    init_process_group(dist_backend)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description="`invoke bench trial`; with --side, one process of one layout"
    )
    parser.add_argument(
        "--lines", default=",".join(LINES), help="comma-separated: " + ", ".join(LINES)
    )
    parser.add_argument("--runs", type=int, default=0)
    parser.add_argument("--layouts", help="comma-separated: " + ", ".join(n for n, *_ in LAYOUTS))
    parser.add_argument("--side", choices=("plain", "trial", "both"))
    parser.add_argument("--model", choices=(MODEL, "tiny"), default=MODEL)
    parser.add_argument("--work-dir")
    args = parser.parse_args()
    if args.side is None:
        layouts = tuple(args.layouts.split(",")) if args.layouts else None
        main(args.runs, lines=tuple(args.lines.split(",")), layouts=layouts)
        sys.exit(0)
    work = Path(args.work_dir)
    if args.model == "tiny":
        result = _tiny_runs(args.runs or 1, work)
    else:
        result = {args.side: [_retinanet_run(args.side, work)]}
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"plain": [], "trial": [], **result}), flush=True)
