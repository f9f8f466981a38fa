"""``invoke bench cluster``: the bundled trial on a real Determined 0.38.1 cluster against plain
mmengine ``Runner`` in the same image under podman, side by side, interleaved.

Both sides train the same small model (RetinaNet R18-FPN, 128 px, batch 2, AdamW, no pretrained
weights) on the same COCO sample for ``ITERS`` iterations, with the same config (the trial's own
``build_config``) and mmengine's log every 10 iterations. "Plain" is ``Runner.from_cfg(cfg).train()``
in a podman container of the project's cpu image (host network, the data bind-mounted), as mmdet's
tools/train.py would run it. "Trial" is an experiment created through ``invoke train --cluster``:
startup hook, Determined's launcher, the trial with its hook reporting to the master.
A run's figure is the median of mmengine's logged ``time`` (every 10 iterations, the mean of those
10; the trial reports to the master at the same interval) after warm-up, read the same way on both
sides (the container's output; the trial's log from the master). Also printed: the
seconds from the experiment's creation to its first reported training step (the master's clock).

It starts its own cluster (``invoke cluster up`` in a temp dir, free ports) and takes it down.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from bench.harness import goal, interleaved, medians, report
from common import REPO_ROOT, free_port

BENCH = "cluster"
ITERS = 60
LOG_INTERVAL = 10  # mmengine's log line (and the trial's report) every 10 iterations
WARMUP = 20  # the first two windows: the first slow steps
DEFAULT_RUNS = 3
RATIO_GOAL = 1.01
FIRST_STEP_GOAL_S = 60.0
DATA_MOUNT = "/mnt/coco-source"
HPARAMS = {
    "model": "retinanet",
    "max_iters": ITERS,
    "val_interval": ITERS + 1,  # time training only (the trial still validates once at the end)
    "checkpoint_interval": ITERS,
    "global_batch_size": 2,
    "pretrained": False,
    "image_scale": [128, 128],
    "num_workers": 1,
    "log_interval": 1,
    "model.backbone.depth": 18,
    "model.neck.in_channels": [64, 128, 256, 512],
}
OPTIMIZER = {"type": "AdamW", "lr": 0.0005, "weight_decay": 0.0001}
ITER_LINE = re.compile(r"Iter\(train\) \[\s*(\d+)/\s*\d+\].*?\btime: ([0-9.]+)")


def main(runs: int = 0) -> None:
    """Bring a cluster up, run both sides ``runs`` times (default 3), print medians and ratios."""
    from devcluster import cluster
    from devcluster.spec import ClusterSpec

    runs = runs or DEFAULT_RUNS
    data = _data()
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        spec = ClusterSpec(Path(tmp) / "cluster", master_port=free_port(), db_port=free_port(),
                           agents=1, slots=1)  # fmt: skip
        print(f"# bench cluster: {runs} run(s) per side, {ITERS} iterations, data {data}")
        up = cluster.up(spec, log=lambda line: print(f"# {line}"))
        try:
            sides = _Sides(up, data, Path(tmp))
            figures = interleaved({"plain": sides.plain, "trial": sides.trial}, runs)
        finally:
            cluster.down(spec.state_dir, log=lambda line: print(f"# {line}"))
    mid = medians(figures)
    ratio = mid["trial"] / mid["plain"]
    first = statistics.median(sides.first_step)
    print(f"plain Runner (podman)  {mid['plain']:.3f} s/iter  runs {_fmt(figures['plain'])}")
    print(f"trial (real cluster)   {mid['trial']:.3f} s/iter  runs {_fmt(figures['trial'])}")
    print(f"ratio trial/plain      {ratio:.3f}  {goal(f'<= {RATIO_GOAL}', ratio <= RATIO_GOAL)}")
    print(f"creation -> first step {first:.1f} s  runs {_fmt(sides.first_step, 1)}  "
          f"{goal(f'<= {FIRST_STEP_GOAL_S:.0f} s', first <= FIRST_STEP_GOAL_S)}")  # fmt: skip
    report(BENCH, "s_per_iter", plain=mid["plain"], trial=mid["trial"], ratio=ratio, runs=runs,
           iters=ITERS, goal=RATIO_GOAL)  # fmt: skip
    report(BENCH, "first_step_s", median=first, runs=sides.first_step, goal=FIRST_STEP_GOAL_S)


def _fmt(values: list[float], digits: int = 3) -> str:
    return " ".join(f"{v:.{digits}f}" for v in values)


def _data() -> Path:
    from trial.testing.samples import real_coco_sample

    sample = real_coco_sample()
    if sample is None:
        from trial.runtime.shapes import make_shapes_coco

        return make_shapes_coco(Path(tempfile.mkdtemp(prefix="bench-shapes-")) / "shapes")
    return Path(sample).resolve()


class _Sides:
    """The two sides on one cluster; each call is one run and returns its s/iter."""

    def __init__(self, up: dict, data: Path, tmp: Path) -> None:
        from determined.experimental import Determined

        from devcluster import master_api, podman
        from devcluster.cluster import local_cpu_image

        self.master, self.data, self.tmp = up["master"], data, tmp
        self.image = local_cpu_image()
        self.session = master_api.login(up["master"], up["user"], up["password"])
        self.sdk = Determined._from_session(self.session)
        self.first_step: list[float] = []
        self.credentials = {"DET_USER": up["user"], "DET_PASS": up["password"]}
        self.containers_conf = tmp / "containers.conf"  # the rlimits, runtime, network of agents
        self.containers_conf.write_text(podman.containers_conf())

    def plain(self, index: int) -> float:
        """Runner.from_cfg(cfg).train() in a container of the cpu image."""
        from devcluster import podman

        argv = podman.podman_argv(
            "run", "--rm", "--network", "host", "--shm-size", "1g",
            "-v", f"{self.data}:{DATA_MOUNT}:ro", "-v", f"{REPO_ROOT}:/src:ro",
            "-e", "PYTHONPATH=/src", "-w", "/tmp", self.image,
            "python3", "-m", "bench.cluster_plain", DATA_MOUNT,
            yaml.safe_dump({**HPARAMS, "optim_wrapper.optimizer": OPTIMIZER}),
        )  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800,
                              env=podman.podman_env(self.containers_conf))  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"plain run {index} failed: {proc.stderr[-2000:]}")
        return _median_time(proc.stdout + proc.stderr)

    def trial(self, index: int) -> float:
        """An experiment through `invoke train --cluster`, timed from mmengine's log lines."""
        experiment = {
            "name": f"bench-cluster-{index}",
            "entrypoint": "python3 -m determined.launch.torch_distributed python3 -m trial",
            "environment": {"image": self.image},
            "resources": {"slots_per_trial": 1, "shm_size": 1 << 30},
            "bind_mounts": [
                {"host_path": str(self.data), "container_path": DATA_MOUNT, "read_only": True}
            ],
            "searcher": {"name": "single", "metric": "bbox_mAP", "smaller_is_better": False},
            "max_restarts": 0,
            "hyperparameters": {
                **HPARAMS,
                "optim_wrapper.optimizer": {"type": "const", "val": OPTIMIZER},
            },
            "data": {
                "source": DATA_MOUNT,
                "cache": "/tmp/node-cache",
                "dest": "/tmp/coco",
                "splits": ["train", "val"],
                "with_images": True,
            },
        }
        path = self.tmp / f"trial-{index}.yaml"
        path.write_text(yaml.safe_dump(experiment, sort_keys=False))
        exp_id = _submit(path, self.master, self.credentials)
        exp = self.sdk.get_experiment(exp_id)
        state = exp.wait(interval=2)
        (trial,) = exp.list_trials()
        logs = "".join(trial.iter_logs())
        if not state.value.endswith("COMPLETED"):  # STATE_COMPLETED
            raise RuntimeError(f"experiment {exp_id} ended {state.value}: {logs[-2000:]}")
        self.first_step.append(self._creation_to_first_step(exp_id, trial))
        return _median_time(logs)

    def _creation_to_first_step(self, exp_id: int, trial) -> float:
        from determined.common.api import bindings

        created = bindings.get_GetExperiment(self.session, experimentId=exp_id).experiment.startTime
        first = next(iter(trial.iter_metrics("training")))
        return (first.end_time - _parse_time(created)).total_seconds()


def _submit(path: Path, master: str, credentials: dict) -> int:
    import os
    import sys

    env = {**os.environ, **credentials}
    argv = [sys.executable, "-m", "invoke", "train", "retinanet", "--cluster", "--master", master,
            "--experiment", str(path)]  # fmt: skip
    proc = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    found = re.search(r"Created experiment (\d+)", proc.stdout)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"submission failed: {proc.stderr[-2000:]}")
    return int(found.group(1))


def _parse_time(text: str):
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _median_time(log: str) -> float:
    """The median of mmengine's logged ``time`` (the mean of the ``LOG_INTERVAL`` iterations
    before each log line) past ``WARMUP``, leaving out the last window (it holds the checkpoint)."""
    times = {int(i): float(t) for i, t in ITER_LINE.findall(log)}
    kept = [t for i, t in sorted(times.items()) if WARMUP < i < ITERS]
    want = (ITERS - WARMUP) // LOG_INTERVAL - 1
    if len(kept) < want:
        raise RuntimeError(f"found {len(kept)} iteration lines past warm-up, want {want}")
    return statistics.median(kept)


if __name__ == "__main__":
    start = time.monotonic()
    main()
    print(f"# {time.monotonic() - start:.0f} s")
