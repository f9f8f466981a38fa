"""``invoke train MODEL`` without ``--cluster``: the bundled trial on this machine, no master needed.

The trial runs as a child process (``python -m trial --local``) inside ``<work-dir>/run`` — never the
repository — with checkpoints in ``<work-dir>/checkpoints``, metrics in ``<work-dir>/metrics.jsonl``
and the final summary in ``<work-dir>/result.json``. Everything is checked in-process first (model,
``--set`` keys, data) so mistakes cost one line, not a model build.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import REPO_ROOT, quiet_library_warnings
from errors import TrainingError
from trial.runtime.ranks import run_forwarding_signals
from trial.runtime.workdir import (
    EXPERIMENT_FILE,
    FAILED_LOG,
    RunRecord,
    has_checkpoint,
    record_run,
    set_aside,
    settle_aside,
)
from trial.ui.console import LOG_FILE, summary
from trial.verbs.localplan import LocalPlan, LocalTrain, plan_local

__all__ = ["LocalTrain", "local_config", "result_line", "train_local", "trial_command"]


def train_local(request: LocalTrain) -> dict[str, Any]:
    """Check the request, run the trial in a child process, return its result.json (plus the
    ``model``, ``work_dir`` and wall-clock ``seconds`` the summary shows). A ``--resume`` of a
    finished run trains nothing and changes nothing: its result has ``nothing_to_do``."""
    if not request.verbose:
        quiet_library_warnings()
    plan = plan_local(request)  # before anything in the work dir changes
    for notice in plan.notices:
        print(f"warning: {notice}", file=sys.stderr, flush=True)
    shown = {"model": model_label(plan.model), "work_dir": str(plan.work_dir)}
    if plan.finished:
        return {
            **shown,
            "nothing_to_do": True,
            "steps": plan.resumed_at,
            "max_iters": plan.max_iters,
        }
    started = time.monotonic()
    code, kept_previous = _run(plan, request)
    if code != 0:
        raise TrainingError(_failure(plan, request, code, kept_previous), exit_code=code)
    result = json.loads((plan.work_dir / "result.json").read_text())
    return {**result, **shown, "seconds": time.monotonic() - started}


def _run(plan: LocalPlan, request: LocalTrain) -> tuple[int, bool]:
    """Record the run, start the trial, wait for it: (exit code, whether the previous run was
    given back). ``--fresh``: the previous run is set aside and deleted once the new one has a
    checkpoint; a new run that fails before that gives it back."""
    work_dir = plan.work_dir
    if request.fresh:
        set_aside(work_dir)
    code, keep_new = 1, True
    try:
        record_run(work_dir, RunRecord(plan.experiment, plan.data, request.nproc))
        command = trial_command(
            work_dir / EXPERIMENT_FILE,
            work_dir,
            data=plan.data,
            resume=request.resume,
            checked_data=True,  # plan_local just validated the annotation JSON
            nproc=request.nproc,
            verbose=request.verbose,
        )
        (work_dir / "run").mkdir(exist_ok=True)
        code = run_forwarding_signals(command, cwd=work_dir / "run", env=trial_env())
    finally:
        keep_new = code == 0 or has_checkpoint(work_dir)
        if request.fresh:
            settle_aside(work_dir, keep_new=keep_new)
    return code, request.fresh and not keep_new


def _failure(plan: LocalPlan, request: LocalTrain, code: int, kept_previous: bool) -> str:
    work_dir = plan.work_dir
    if kept_previous:
        log = work_dir / FAILED_LOG if not request.verbose else "the output above"
        return (
            f"local trial exited with code {code} before its first checkpoint; the previous run "
            f"in {work_dir} is kept (--fresh replaces it only then); see {log}"
        )
    log = work_dir / "run" if request.verbose else work_dir / LOG_FILE
    return f"local trial exited with code {code}; see {log}"


def model_label(model: str) -> str:
    """How the summary names a model: a config file by its name, anything else as given."""
    return Path(model).name if model.endswith(".py") and "::" not in model else model


def result_line(result: dict[str, Any]) -> str:
    """What ``invoke train`` ends with: model, iterations, time, mAP, where the results are."""
    if result.get("nothing_to_do"):
        return (
            f"{result['model']}: already at iteration {result['steps']} of {result['max_iters']} "
            f"in {result['work_dir']}; nothing to do (a larger --max-iters trains further)"
        )
    return summary(
        result, model=result["model"], work_dir=result["work_dir"], seconds=result["seconds"]
    )


def trial_command(
    experiment: str | Path,
    work_dir: str | Path,
    *,
    data: str | None = None,
    max_iters: int | None = None,
    sets: Sequence[str] = (),
    hparams: Sequence[str] = (),
    resume: bool = False,
    checked_data: bool = False,
    nproc: int = 1,
    verbose: bool = False,
) -> list[str]:
    """The ``python -m trial --local ...`` command line for one local run.

    With ``nproc > 1`` that process runs the ranks through torch's launcher (trial/runtime/ranks.py)."""
    return [
        sys.executable,
        "-m",
        "trial",
        "--local",
        "--experiment",
        str(experiment),
        "--work-dir",
        str(work_dir),
        *(["--max-iters", str(max_iters)] if max_iters else []),
        *(["--data", data] if data else []),
        *[arg for item in sets for arg in ("--set", item)],
        *[arg for item in hparams for arg in ("--hparam", item)],
        *(["--resume"] if resume else []),
        *(["--checked-data"] if checked_data else []),
        *(["--nproc", str(nproc)] if nproc > 1 else []),
        *(["--verbose"] if verbose else []),
    ]


def local_config(request: LocalTrain) -> Any:
    """The mmengine config a local run of ``request`` trains with (checks everything; no training)."""
    return plan_local(request).config


def trial_env() -> dict[str, str]:
    """The environment for a child ``python -m trial``: this checkout first on PYTHONPATH."""
    existing = os.environ.get("PYTHONPATH")
    path = f"{REPO_ROOT}{os.pathsep}{existing}" if existing else str(REPO_ROOT)
    return {**os.environ, "PYTHONPATH": path}
