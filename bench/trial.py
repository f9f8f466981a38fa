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
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.harness import interleaved, medians, report, results
from trial.runtime.ranks import free_det_ports, torchrun_argv

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
SIDES = ("plain", "trial")
C10D_PORT = 29400
BENCH = "trial"
PROCESS = "process"  # one process's figures, read back by the process that started it


def main(
    runs: int = 0, *, lines: tuple[str, ...] = LINES, layouts: tuple[str, ...] | None = None
) -> None:
    """Run both sides ``runs`` times (default 3) on every layout (or those named in
    ``layouts``); print medians and ratios, each with its JSON result line (bench/harness.py)."""
    runs = runs or DEFAULT_RUNS
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # tear the namespaces down first
    chosen = [layout for layout in LAYOUTS if layouts is None or layout[0] in layouts]
    with _two_nodes(any(nodes > 1 for _, nodes, _ in chosen)) as (net, why_not):
        for line in (name for name in LINES if name in lines):
            print(_header(line, runs), flush=True)
            measure = {"retinanet": _retinanet, "overhead": _overhead}[line]
            for layout in chosen:
                _each_layout(line, layout, net, why_not, lambda lay: measure(runs, lay, net))  # noqa: B023


def _header(line: str, runs: int) -> str:
    if line == "retinanet":
        return (
            f"RetinaNet R50-FPN {IMAGE_SCALE[0]} px, batch {BATCH} per rank, {ITERS} iters "
            f"({WARMUP} warm-up), {runs} runs per side, interleaved, on the generated shapes "
            "set (the same data everywhere)"
        )
    return (
        f"what the trial adds per step: tiny model, batch {BATCH} per rank, {TINY_ITERS} "
        f"steps ({TINY_WARMUP} warm-up), reports every {TINY_LOG_INTERVAL}, {runs} runs "
        "per side alternating in one process"
    )


def _each_layout(result: str, layout: tuple, net: Any, why_not: str | None, measure) -> None:
    """``name: <line>`` and its JSON result for one layout (2 nodes: when namespaces can be made)."""
    name, nodes, per_node = layout
    if nodes > 1 and net is None:
        print(f"{name}: skipped ({why_not})", flush=True)
        report(BENCH, result, layout=name, skipped=why_not)
        return
    text, fields = measure((nodes, per_node))
    print(f"{name}: {text}", flush=True)
    report(BENCH, result, layout=name, **fields)


def _retinanet(runs: int, layout: tuple[int, int], net: Any) -> tuple[str, dict]:
    figures = _compare(runs, layout, net)
    plain, trial = medians(figures).values()
    text = (
        f"plain mmengine Runner {plain:.3f} s/iter, bundled trial {trial:.3f} s/iter (medians), "
        f"ratio trial/plain {trial / plain:.3f}"
    )
    fields = {"plain_s_per_iter": plain, "trial_s_per_iter": trial, "ratio": trial / plain}
    return text, {**fields, "runs": figures}


def _overhead(runs: int, layout: tuple[int, int], net: Any) -> tuple[str, dict]:
    with tempfile.TemporaryDirectory(prefix="bench-trial-") as tmp:
        args = ["--model", "tiny", "--side", "both", "--runs", str(runs)]
        figures = _launch(args, layout, Path(tmp), net)
    plain, trial = (value * 1e3 for value in medians(figures).values())
    text = (
        f"plain {plain:.3f} ms/step, trial {trial:.3f} ms/step (medians), "
        f"the trial adds {trial - plain:+.3f} ms/step"
    )
    fields = {"plain_ms_per_step": plain, "trial_ms_per_step": trial}
    return text, {**fields, "added_ms_per_step": trial - plain, "runs": figures}


def _compare(runs: int, layout: tuple[int, int], net: Any) -> dict[str, list[float]]:
    """RetinaNet s/iter of each side, ``runs`` fresh processes each, interleaved."""
    with tempfile.TemporaryDirectory(prefix="bench-trial-") as tmp:

        def side(name: str):
            def run(index: int) -> float:
                args = ["--model", MODEL, "--side", name]
                seconds = _launch(args, layout, Path(tmp) / f"{name}{index}", net)[name][0]
                print(f"{layout}, run {index + 1}/{runs} {name:5s}: {seconds:.3f} s/iter",
                      flush=True)  # fmt: skip
                return seconds

            return run

        return interleaved({name: side(name) for name in SIDES}, runs)


def _launch(args: list[str], layout: tuple[int, int], work_dir: Path, net: Any) -> dict:
    """Run ``python -m bench.trial ARGS`` on ``layout``; return rank 0's figures per side."""
    nodes, per_node = layout
    module = ["-m", "bench.trial", *args]
    if nodes == 1:
        launcher = torchrun_argv(nproc=per_node) if per_node > 1 else [sys.executable]
        command = [*launcher, *module, "--work-dir", str(work_dir)]
        env = {**free_det_ports(), **os.environ}  # several multi-rank runs may share a machine
        out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
        return _figures(out)
    chief = net.nodes[0].address
    procs = []
    for node in net.nodes[:nodes]:
        launcher = torchrun_argv(nproc=per_node, nnodes=nodes, node_rank=node.index,
                                 master=chief, port=C10D_PORT)  # fmt: skip
        command = [*launcher, *module, "--work-dir", str(work_dir / f"node{node.index}")]
        env = {**os.environ, "DET_CHIEF_IP": chief, "OMP_NUM_THREADS": "1"}
        procs.append(node.popen(command, env=env, stdout=subprocess.PIPE, text=True))
    outputs = [proc.communicate()[0] for proc in procs]
    if any(proc.returncode for proc in procs):
        raise RuntimeError(f"a 2-node bench run failed: exit codes {[p.returncode for p in procs]}")
    return _figures(outputs[0])


def _figures(stdout: str) -> dict[str, list[float]]:
    (record,) = results(stdout, bench=BENCH, result=PROCESS)
    return {name: record[name] for name in SIDES}


@contextlib.contextmanager
def _two_nodes(wanted: bool) -> Iterator[tuple[Any, str | None]]:
    """Two network namespaces when a 2-node layout is wanted and this machine can make them."""
    if not wanted:
        yield None, None
        return
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

    from trial.engine.distributed import torch_world_size
    from trial.runtime.data import default_data
    from trial.settings.config import TrainSettings, build_config, load_base_config, resolve_base

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

    cfg = tiny_config(work_dir, iters=TINY_ITERS, batch=BATCH, log_interval=TINY_LOG_INTERVAL)
    with _sides(cfg, work_dir) as add_trial:

        def side(name: str):
            extra = add_trial if name == "trial" else None
            return lambda i: tiny_run(cfg, f"{name}{i}", warmup=TINY_WARMUP, add_trial=extra)

        return interleaved({name: side(name) for name in SIDES}, runs)


@contextlib.contextmanager
def _sides(cfg: Any, work_dir: Path):
    """Adapt ``cfg`` to this process's ranks (both sides need it); yield ``add_trial(runner, ...)``,
    which registers what the trial adds, on one Determined core context for the process."""
    import determined as det

    from trial.engine.distributed import torch_world_size

    ranks = torch_world_size()
    distributed = None
    if ranks > 1:
        join_ranks(cfg)
        distributed = det.core.DistributedContext.from_torch_distributed()
    storage = str(work_dir / "checkpoints")
    modes = det.core.PreemptMode
    mode = modes.WorkersAskChief if distributed is None else modes.ChiefOnly
    with det.core.init(
        checkpoint_storage=storage, distributed=distributed, preempt_mode=mode
    ) as core:
        preempt = core.preempt

        def add_trial(
            runner, **hook_args
        ) -> None:  # what trial/runtime/train.py and __main__.py add
            from trial.engine.hook import DetCoreHook

            if distributed is not None:
                from trial.engine.distributed import BufferSyncHook, RankPreemption

                core.preempt = RankPreemption(preempt)
                buffers = BufferSyncHook()
                runner.register_hook(buffers)
                hook_args["before_save"] = buffers.sync
            runner.register_hook(DetCoreHook(core, **hook_args))

        yield add_trial


def join_ranks(cfg) -> None:
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
        report(BENCH, PROCESS, **{"plain": [], "trial": [], **result})
