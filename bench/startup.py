"""``invoke bench startup``: a trial's start at COCO scale, plain mmdet vs the node's parsed-annotations
cache (trial/engine/anncache.py), side by side in one run.

On a generated COCO-scale set (trial/testing/cocogen.py; scale 1 is train2017's 118,287 images and 860,001
annotations, made once into ``<cache>/bench``), each run starts 1 or 2 ranks at once as fresh
processes (gloo on CPU, 2 DataLoader workers each) that build the trial's config (RetinaNet's
data pipeline and datasets, train filtered and val) around a one-convolution detector, so what is
timed is the data side, and stop after the first training step. Per run: the time from process
start to that step (slowest rank), the data init (``Runner.train()`` until its loops, datasets and
evaluator are built: where the annotations are parsed), each rank's peak RSS, and the peak of the
whole process tree (ranks + workers) as RSS and PSS sampled every SAMPLE_S. "plain" is mmdet's
``CocoDataset``; "cold" is the trial's dataset on an empty cache (the first start on a node),
"warm" the next start on the same node.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.harness import report
from common import cache_root, free_port

RANKS = (1, 2)
WORKERS = 2
BATCH = 2
IMAGE_SCALE = (320, 320)
SAMPLE_S = 0.2
SIDES = ("plain", "cold", "warm")


def main(runs: int = 0, scale: float = 1.0) -> None:
    """Generate the set (once), then per rank count: plain, cold, warm (``runs`` times each,
    medians); print the table and the ratios."""
    root = bench_data(scale)
    _warm_page_cache(root)  # both sides read the JSON from memory, as on a node that staged it
    results: dict[tuple[int, str], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="anncache-", dir=root.parent) as tmp:
        for index in range(runs or 1):
            for ranks in RANKS:
                cache = Path(tmp) / f"run{index}-{ranks}"
                for side in SIDES:
                    result = run_side(side, root, cache=cache, ranks=ranks)
                    results.setdefault((ranks, side), []).append(result)
                    print(_row(ranks, side, result), flush=True)
        entry = sum(p.stat().st_size for p in Path(tmp).glob("run0-1/derived/*/*.anncache"))
    print("\n".join(_summary(root, scale, results, entry_bytes=entry)))


def bench_data(scale: float) -> Path:
    """The generated set for ``scale``, made once under the project's cache."""
    from trial.testing.cocogen import VERSION, make_coco_scale

    root = cache_root() / "bench" / f"{VERSION}-scale{scale:g}"
    started = time.perf_counter()
    fresh = not root.exists()
    make_coco_scale(root, scale=scale)
    if fresh:
        print(f"generated {root} in {time.perf_counter() - started:.1f} s", flush=True)
    return root


def run_side(side: str, root: Path, *, cache: Path, ranks: int) -> dict:
    """Start ``ranks`` rank processes at once; their results plus the tree's peak memory."""
    import psutil

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
        outs = [Path(tmp) / f"rank{r}.json" for r in range(ranks)]
        started = time.time()
        children = [
            _start_rank(side, root, cache, Path(tmp) / f"rank{r}", _rank_env(r, ranks, port))
            for r in range(ranks)
        ]
        peak_rss, peak_pss = _sample_tree([psutil.Process(c.pid) for c in children], children)
        for r, child in enumerate(children):
            if child.wait():
                log = (Path(tmp) / f"rank{r}.log").read_text()[-3000:]
                raise RuntimeError(f"{side} rank {r} failed ({child.returncode}): {log}")
        per_rank = [json.loads(out.read_text()) for out in outs]
    return {
        "to_step_s": max(r["step_at"] for r in per_rank) - started,
        "data_init_s": max(r["data_init_s"] for r in per_rank),
        "rss_per_rank": max(r["peak_rss"] for r in per_rank),
        "tree_rss": peak_rss,
        "tree_pss": peak_pss,
    }


def _start_rank(side: str, root: Path, cache: Path, stem: Path, env: dict) -> subprocess.Popen:
    argv = [sys.executable, "-m", "bench.startup", "--side", side, "--data", str(root),
            "--cache", str(cache), "--out", f"{stem}.json", "--work-dir", f"{stem}-work"]  # fmt: skip
    with open(f"{stem}.log", "wb") as log:  # a file, not a pipe: a chatty rank never blocks
        return subprocess.Popen(argv, env=os.environ | env, stdout=log, stderr=subprocess.STDOUT)


def _rank_env(rank: int, ranks: int, port: int) -> dict[str, str]:
    env = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if ranks > 1:
        env |= {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(ranks),
                "LOCAL_WORLD_SIZE": str(ranks), "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port)}  # fmt: skip
    return env


def _sample_tree(roots, children) -> tuple[int, int]:
    """Peak RSS and PSS summed over the ranks and their workers, until every rank exits."""
    import psutil

    peak_rss = peak_pss = 0
    while any(child.poll() is None for child in children):
        rss = pss = 0
        for root in roots:
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for proc in procs:
                try:
                    info = proc.memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                rss, pss = rss + info.rss, pss + info.pss
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(SAMPLE_S)
    return peak_rss, peak_pss


def _warm_page_cache(root: Path) -> None:
    for path in sorted((root / "annotations").glob("*.json")):
        with open(path, "rb") as f:
            while f.read(16 << 20):
                pass


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def _row(ranks: int, side: str, r: dict) -> str:
    return (
        f"{ranks} rank(s) {side:5s}: to first step {r['to_step_s']:6.1f} s, data init "
        f"{r['data_init_s']:6.2f} s, peak RSS/rank {_gb(r['rss_per_rank'])}, node peak "
        f"RSS {_gb(r['tree_rss'])} / PSS {_gb(r['tree_pss'])}"
    )


def _summary(root: Path, scale: float, results: dict, *, entry_bytes: int) -> list[str]:
    train = root / "annotations" / "instances_train2017.json"
    lines = [
        f"COCO-scale set x{scale:g} ({train.stat().st_size / 1e6:.0f} MB train JSON), "
        f"{WORKERS} workers/rank, batch {BATCH}/rank, one-conv detector; cache entry "
        f"{entry_bytes / 1e6:.0f} MB; medians of {len(next(iter(results.values())))} run(s)"
    ]
    for ranks in RANKS:
        med = {s: {k: statistics.median(r[k] for r in results[(ranks, s)])
                   for k in results[(ranks, s)][0]} for s in SIDES}  # fmt: skip
        plain = med["plain"]
        for side in ("warm", "cold"):
            m = med[side]
            ratios = {
                k: m[k] / plain[k] for k in ("data_init_s", "to_step_s", "rss_per_rank", "tree_pss")
            }
            report("startup", "ratio", ranks=ranks, side=side, against="plain", **ratios)
            lines.append(
                f"{ranks} rank(s) {side}/plain: data init {m['data_init_s'] / plain['data_init_s']:.3f}, "
                f"to first step {m['to_step_s'] / plain['to_step_s']:.3f}, peak RSS/rank "
                f"{m['rss_per_rank'] / plain['rss_per_rank']:.3f}, node PSS "
                f"{m['tree_pss'] / plain['tree_pss']:.3f}"
            )
    return lines


def _rank_main(side: str, data: Path, cache: Path, out: Path, work_dir: Path) -> None:
    """One rank: build the trial's Runner, train one step, write its marks to ``out``."""
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    marks: dict[str, float] = {}

    class Marks(Hook):
        priority = "HIGHEST"  # stamp before_run before other hooks' work (the config dump)

        def before_run(self, runner) -> None:
            marks["data_ready"] = time.time()

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            marks.setdefault("step_at", time.time())
            runner.train_loop.stop_training = True  # one step (no validation) is all we time

    runner = Runner.from_cfg(_probe_config(side, data, cache, work_dir))
    runner.register_hook(Marks())
    marks["train"] = time.time()
    runner.train()
    out.write_text(json.dumps({
        "step_at": marks["step_at"],
        "data_init_s": marks["data_ready"] - marks["train"],
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }))  # fmt: skip


def _probe_config(side: str, data: Path, cache: Path, work_dir: Path):
    """The trial's RetinaNet config (data, pipeline, loops) around the one-conv probe model;
    plain mmdet datasets for ``plain``, the node cache at ``cache`` otherwise."""
    from bench.trial import join_ranks
    from trial.engine.distributed import torch_world_size
    from trial.runtime.data import coco_dir_paths
    from trial.settings.config import TrainSettings, build_config, load_base_config, resolve_base

    paths = replace(coco_dir_paths(data, check_json=False),
                    ann_cache=None if side == "plain" else str(cache))  # fmt: skip
    ranks = torch_world_size()
    settings = TrainSettings(
        data=paths, work_dir=str(work_dir), max_iters=10, val_interval=10, checkpoint_interval=10,
        batch_size=BATCH, num_workers=WORKERS, image_scale=IMAGE_SCALE, log_interval=1,
        pretrained=False, launcher="pytorch" if ranks > 1 else "none",
    )  # fmt: skip
    cfg = build_config(load_base_config(resolve_base("retinanet")), settings)
    _register_probe()
    preprocessor = cfg["model"]["data_preprocessor"]
    cfg["model"] = dict(type="StartupProbeDetector", data_preprocessor=preprocessor)
    if ranks > 1:
        join_ranks(cfg)
    return cfg


def _register_probe() -> None:
    """A one-convolution detector: the model costs nothing, the data side is what is timed."""
    import torch
    from mmdet.models.detectors.base import BaseDetector
    from mmdet.registry import MODELS

    if MODELS.get("StartupProbeDetector") is not None:
        return

    @MODELS.register_module()
    class StartupProbeDetector(BaseDetector):
        def __init__(self, data_preprocessor=None, init_cfg=None) -> None:
            super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
            self.conv = torch.nn.Conv2d(3, 1, 1)

        def extract_feat(self, batch_inputs):
            return self.conv(batch_inputs)

        def loss(self, batch_inputs, batch_data_samples) -> dict:
            return {"loss": self.extract_feat(batch_inputs).mean()}

        def predict(self, batch_inputs, batch_data_samples, rescale: bool = True):
            return batch_data_samples

        def _forward(self, batch_inputs, batch_data_samples=None):
            return self.extract_feat(batch_inputs)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="one rank of `invoke bench startup`")
    parser.add_argument("--side", choices=SIDES, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    args = parser.parse_args()
    _rank_main(args.side, args.data, args.cache, args.out, args.work_dir)
