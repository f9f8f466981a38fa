"""The GPU check: one run on an offline H200 settles whether mmcv's CUDA ops and the trial work there.

``prepare`` (here, with network) fills a carry folder (< 64 MiB) with what that machine lacks: the
wheels for its Python (mmdet, mmengine, determined, pycocotools, … minus what it has: torch, numpy,
opencv-headless, matplotlib, scipy, tensorboard, pytest), mmcv's sdist and a real COCO sample.
``run`` (there) executes a fixed plan of steps, each with its own time limit so one failure cannot
eat the budget, and writes ``$OUT/gpu-check.json`` + ``gpu-check.log``:

  build phase  env facts -> offline install into a venv over the machine's packages -> does torch
               need C++20 -> compile mmcv's CUDA ops for 9.0 (timed; images/scripts/compile-mmcv.sh,
               the same script as ci/setup.sh) -> nms, batched_nms, RoIAlign, sigmoid focal loss on
               CUDA against CPU (+ which op refuses bf16)
  train phase  RetinaNet, Mask R-CNN, GFL ~30 iterations each through the bundled trial, fp32 and
               AMP fp16 (bf16 when every op accepted it) -> trial vs plain mmengine s/iter
               (`invoke bench trial`'s 1-rank comparison) and the trial's added ms per step

``--cpu-rehearsal`` runs the same plan here on CPU (Python 3.11, the carried wheels installed
offline into a fresh venv, fewer iterations, the cached CPU mmcv wheel instead of the compile).
The plan is pure (``plan_steps``); ``run_steps`` executes it. Stdlib only: it starts before the
carried wheels are installed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project: common, images
from gpucheck_carry import MMCV, wheels_dir

from common import REPO_ROOT as REPO
from common import write_atomic

GPU_ARCH = "9.0"  # H100/H200
MODELS = ("retinanet", "maskrcnn", "gfl")
AMP = {
    "fp32": [],
    "fp16": ["optim_wrapper.type=AmpOptimWrapper"],  # autocast float16, dynamic loss scale
    # dtype is not a key of the configs' OptimWrapper: the whole wrapper, with mmdet's 1x SGD.
    "bf16": [
        "optim_wrapper={type: AmpOptimWrapper, dtype: bfloat16, optimizer: "
        "{type: SGD, lr: 0.01, momentum: 0.9, weight_decay: 0.0001}}"
    ],
}
BUILD, TRAIN = "build", "train"
PHASES = (BUILD, TRAIN)


@dataclass(frozen=True)
class Step:
    """One step of the check: a command with its own time limit and the steps it needs."""

    name: str
    phase: str
    argv: tuple[str, ...]
    timeout_s: int
    needs: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


@dataclass
class Outcome:
    """What one step did (the JSON record)."""

    name: str
    status: str  # ok | failed | timeout | skipped
    seconds: float = 0.0
    detail: str = ""
    data: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Setup:
    """Where things are for one run."""

    carry: Path
    work: Path  # venv + build dir; kept between the two phases' commands (ignored path)
    out: Path
    rehearsal: bool

    @property
    def py(self) -> str:
        return str(self.work / "venv" / "bin" / "python")

    @property
    def device(self) -> str:
        return "cpu" if self.rehearsal else "cuda"


def plan_steps(s: Setup, *, phases: tuple[str, ...] = PHASES, bf16: bool = False) -> list[Step]:
    """The steps of ``phases`` in order (pure). ``bf16``: the ops check found no bf16 refusal."""
    iters = 2 if s.rehearsal else 30
    me = (s.py, str(Path(__file__).resolve()))
    wheels = wheels_dir(s.carry, "{}.{}".format(*sys.version_info[:2]))
    script = ("bash", str(REPO / "ci" / "gpu-check.sh"))
    base = (
        [Step("machine-base", BUILD, (*script, "machine-base", str(s.work)), 900)]
        if s.rehearsal
        else []
    )
    steps = [
        *base,
        Step(
            "install",
            BUILD,
            (*script, "install", str(wheels), str(s.work)),
            300,
            tuple(b.name for b in base),
        ),
        Step("env", BUILD, (*me, "env"), 60, ("install",)),
        Step("cxx20", BUILD, (s.py, "-m", "images.mmcvbuild", "needs-cxx20"), 60, ("install",)),
        _mmcv_step(s),
        Step("ops", BUILD, (*me, "ops", "--device", s.device), 180, ("mmcv",)),
    ]
    precisions = ("fp32", "fp16", "bf16") if bf16 else ("fp32", "fp16")
    for model in MODELS:  # `invoke train`: the product verb, with its local profile (no weights)
        for precision in precisions:
            sets = [a for item in AMP[precision] for a in ("--set", item)]
            work = str(s.work / f"train-{model}-{precision}")
            # --fresh: a rerun of the phase replaces the last one's run (a work dir holds one run)
            argv = (s.py, "-m", "invoke", "train", model, "--data", str(s.carry / "coco"),
                    "--max-iters", str(iters), "--work-dir", work, "--fresh", *sets)  # fmt: skip
            limit = 300 if s.rehearsal else 150
            steps.append(Step(f"train-{model}-{precision}", TRAIN, argv, limit, ("ops",)))
    runs = "1" if s.rehearsal else "2"
    steps.append(
        Step(
            "bench",
            TRAIN,
            (*me, "bench", "--runs", runs, "--work", str(s.work / "bench")),
            900 if s.rehearsal else 540,  # a loaded 2-core CPU runs the 48 bench iterations slowly
            ("ops",),
        )
    )
    return [step for step in steps if step.phase in phases]


def _mmcv_step(s: Setup) -> Step:
    if s.rehearsal:  # the cached CPU wheel: the compile path is tested on one unit instead
        return Step(
            "mmcv",
            BUILD,
            ("bash", str(REPO / "ci" / "gpu-check.sh"), "mmcv-cached", s.py),
            120,
            ("install",),
        )
    env = (
        ("PY", s.py),
        ("MMCV_VERSION", MMCV),
        ("MMCV_SDIST", str(s.carry / f"mmcv-{MMCV}.tar.gz")),
        ("TORCH_CUDA_ARCH_LIST", GPU_ARCH),
        ("MAX_JOBS", str(os.cpu_count() or 16)),
    )
    argv = ("bash", str(REPO / "ci" / "gpu-check.sh"), "mmcv-compile", str(s.work / "mmcv"), s.py)
    return Step("mmcv", BUILD, argv, 570, ("install",), env)


def run_steps(
    steps: list[Step], *, log, results: dict[str, Outcome], on_step=lambda: None
) -> dict[str, Outcome]:
    """Run each step under its own limit; a step whose ``needs`` did not pass is skipped.
    ``on_step`` runs after every step (the JSON is rewritten: a killed run keeps what it did)."""
    for step in steps:
        blocked = [n for n in step.needs if n in results and results[n].status != "ok"]
        if blocked or any(n not in results for n in step.needs):
            results[step.name] = Outcome(
                step.name, "skipped", detail=f"needs {', '.join(step.needs)}"
            )
            log(f"[gpu-check] {step.name}: skipped (needs {', '.join(step.needs)})")
            continue
        results[step.name] = _run_one(step, log=log)
        on_step()
    return results


def _run_one(step: Step, *, log) -> Outcome:
    log(f"[gpu-check] {step.name}: {' '.join(step.argv[:6])} … (limit {step.timeout_s} s)")
    start = time.monotonic()
    env = {**os.environ, **dict(step.env), "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    # Its own session: a step past its limit is killed with everything it started (ninja, nvcc).
    proc = subprocess.Popen(
        step.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=step.timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        log((stdout + stderr)[-4000:])
        return Outcome(step.name, "timeout", time.monotonic() - start, f"over {step.timeout_s} s")
    seconds = time.monotonic() - start
    text = stdout + stderr
    log(text[-6000:])
    data = _last_json(stdout)
    if proc.returncode != 0 and not (step.name == "cxx20" and proc.returncode == 1):
        lines = [ln for ln in text.strip().splitlines() if ln.strip()] or ["no output"]
        raised = [ln for ln in lines if re.match(r"\w*(Error|Exception): ", ln)]  # the cause
        tail = (raised or lines)[-1:]
        return Outcome(
            step.name, "failed", seconds, f"exit {proc.returncode}: {tail[0][:300]}", data
        )
    if "--work-dir" in step.argv:  # a training run: its result.json (steps, validation mAPs)
        result = Path(step.argv[step.argv.index("--work-dir") + 1]) / "result.json"
        if result.exists():
            data = json.loads(result.read_text())
    if step.name == "cxx20":
        data = {"needs_cxx20": proc.returncode == 0, "said": text.strip().splitlines()[-1:]}
    return Outcome(step.name, "ok", seconds, "", data)


def _last_json(stdout: str) -> dict:
    for line in reversed(stdout.splitlines()):
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except ValueError:
                return {}
    return {}


def main(argv: list[str] | None = None) -> int:
    """CLI: ``prepare`` | ``run`` (+ the step helpers ``env``, ``ops``, ``bench``)."""
    p = argparse.ArgumentParser(prog="ci/gpucheck.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    prep = sub.add_parser("prepare", help="fill the carry folder (here, with network)")
    prep.add_argument("--carry", type=Path, default=REPO / "gpu-carry")
    prep.add_argument("--python", action="append", help="target Python(s); default 3.12 and 3.11")
    run = sub.add_parser("run", help="run the check (on the GPU machine, or --cpu-rehearsal here)")
    run.add_argument("--carry", type=Path, default=REPO / "gpu-carry")
    run.add_argument("--work", type=Path, default=REPO / "gpu-carry" / "work")
    run.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-check-out")))
    run.add_argument("--phase", choices=(*PHASES, "all"), default="all")
    run.add_argument("--cpu-rehearsal", action="store_true")
    sub.add_parser("env")
    ops = sub.add_parser("ops")
    ops.add_argument("--device", default="cuda")
    bench = sub.add_parser("bench")
    bench.add_argument("--runs", type=int, default=2)
    bench.add_argument("--work", type=Path, required=True)
    args = p.parse_args(argv)
    if args.cmd == "prepare":
        from gpucheck_prepare import prepare

        return prepare(args.carry, pythons=tuple(args.python or ("3.12", "3.11")))
    if args.cmd == "run":
        return _run(args)
    from gpucheck_probes import PROBES

    print(json.dumps(PROBES[args.cmd](args)), flush=True)
    return 0


def _run(args: argparse.Namespace) -> int:
    s = Setup(args.carry.resolve(), args.work.resolve(), args.out.resolve(), args.cpu_rehearsal)
    s.out.mkdir(parents=True, exist_ok=True)
    s.work.mkdir(parents=True, exist_ok=True)
    phases = PHASES if args.phase == "all" else (args.phase,)
    report = s.out / "gpu-check.json"
    saved = s.work / "gpu-check.json"  # the build phase's results, read by the train phase
    results: dict[str, Outcome] = {}
    if BUILD not in phases and saved.exists():  # only the earlier phase's steps: never stale ones
        earlier = {step.name for step in plan_steps(s, phases=(BUILD,))}
        steps = json.loads(saved.read_text())["steps"]
        results = {k: Outcome(**v) for k, v in steps.items() if k in earlier}
    with (s.out / "gpu-check.log").open("a") as logf:

        def log(text: str) -> None:
            print(text, flush=True)
            logf.write(text + "\n")
            logf.flush()

        mode = "CPU rehearsal" if s.rehearsal else "GPU"
        log(f"[gpu-check] {mode}: phases {', '.join(phases)}; carry {s.carry}; work {s.work}")
        start = time.monotonic()
        for phase in phases:
            bf16 = not results.get("ops", Outcome("ops", "")).data.get("bf16_refused", ["?"])
            steps = plan_steps(s, phases=(phase,), bf16=bf16)
            write = lambda: _write(results, s, report, saved, time.monotonic() - start)  # noqa: E731
            run_steps(steps, log=log, results=results, on_step=write)
            write()
    failed = [o.name for o in results.values() if o.status != "ok"]
    print(f"[gpu-check] wrote {report}; not ok: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


def _write(
    results: dict[str, Outcome], s: Setup, report: Path, saved: Path, seconds: float
) -> None:
    doc = {
        "mode": "cpu-rehearsal" if s.rehearsal else "gpu",
        "seconds": round(seconds, 1),
        "steps": {k: asdict(v) for k, v in results.items()},
    }
    for path in (report, saved):
        write_atomic(path, json.dumps(doc, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
