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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from common import REPO_ROOT, atomic_file
from errors import ConfigError, TrainingError
from trial.runtime.data import resolve_data
from trial.runtime.ranks import run_forwarding_signals
from trial.runtime.workdir import (
    CHECKPOINTS,
    check_resume_model,
    check_start,
    clear_run,
    resume_checkpoint,
)
from trial.settings.hparams import model_ref
from trial.settings.local_profile import local_experiment
from trial.settings.preflight import checked_config, command_line_overrides
from trial.ui.console import LOG_FILE, quiet_library_warnings, summary
from trial.verbs.options import directory_option


RUNS_DIR = "work_dirs"  # the one place inside the repository for runs (the default; git ignores it)


@dataclass(frozen=True)
class LocalTrain:
    """One local training request, as the task received it."""

    model: str
    data: str | None = None
    max_iters: int | None = None
    work_dir: str | None = None
    config: str | None = None
    sets: Sequence[str] = ()
    hparams: Sequence[str] = ()
    resume: bool = False
    experiment: str | None = None
    nproc: int = 1
    verbose: bool = False
    fresh: bool = False


def train_local(request: LocalTrain) -> dict[str, Any]:
    """Check the request, run the trial in a child process, return its result.json (plus the
    ``model``, ``work_dir`` and wall-clock ``seconds`` the summary shows)."""
    if request.nproc < 1:
        raise ConfigError(f"--nproc {request.nproc} must be at least 1")
    if not request.verbose:
        quiet_library_warnings()
    work_dir = _work_dir(request)
    experiment = _experiment(request)
    _preflight(experiment, request, work_dir)  # before anything in the work dir changes
    if request.fresh:
        clear_run(work_dir)
    exp_path = work_dir / "experiment.yaml"
    with atomic_file(exp_path) as f:
        f.write(yaml.safe_dump(experiment, sort_keys=False))
    command = trial_command(
        exp_path,
        work_dir,
        data=request.data,
        max_iters=request.max_iters,
        sets=request.sets,
        hparams=request.hparams,
        resume=request.resume,
        checked_data=True,  # _preflight just validated the annotation JSON
        nproc=request.nproc,
        verbose=request.verbose,
    )
    run_dir = work_dir / "run"
    run_dir.mkdir(exist_ok=True)
    started = time.monotonic()
    code = run_forwarding_signals(command, cwd=run_dir, env=trial_env())
    if code != 0:
        log = run_dir if request.verbose else work_dir / LOG_FILE
        raise TrainingError(f"local trial exited with code {code}; see {log}", exit_code=code)
    result = json.loads((work_dir / "result.json").read_text())
    model = Path(request.config).name if request.config else request.model
    return {
        **result,
        "model": model,
        "work_dir": str(work_dir),
        "seconds": time.monotonic() - started,
    }


def result_line(result: dict[str, Any]) -> str:
    """What ``invoke train`` ends with: model, iterations, time, mAP, where the results are."""
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
    return _preflight(_experiment(request), request, _work_dir(request))


def _experiment(request: LocalTrain) -> dict:
    """The experiment this run trains, with the local profile (trial/settings/local_profile.py)."""
    return local_experiment(
        request.model, experiment=request.experiment, config=request.config, data=request.data
    )


def _preflight(experiment: dict, request: LocalTrain, work_dir: Path) -> Any:
    """Build the exact config once in-process: bad model names, --set keys and data fail here,
    as does a start over a previous run (trial/runtime/workdir.py). The same checks as --cluster's."""
    check_start(work_dir, resume=request.resume, fresh=request.fresh)
    hparams, overrides = command_line_overrides(
        experiment["hyperparameters"], sets=request.sets, hparam_items=request.hparams
    )
    cfg = checked_config(
        experiment,
        hparams,
        overrides=overrides,
        data=resolve_data(request.data, experiment),
        work_dir=str(work_dir / "run"),
        max_iters=request.max_iters,
        world_size=request.nproc,
    )
    if request.resume:
        storage = work_dir / CHECKPOINTS
        check_resume_model(storage, resume_checkpoint(storage), model_ref(hparams))
    return cfg


def _work_dir(request: LocalTrain) -> Path:
    if request.work_dir:
        work_dir = directory_option(request.work_dir, "--work-dir")
    else:
        work_dir = directory_option(
            Path.cwd() / RUNS_DIR / Path(request.model).stem.replace("mmdet::", ""),
            "--work-dir",
        )
    if work_dir == REPO_ROOT or work_dir in REPO_ROOT.parents:
        raise ConfigError(
            f"--work-dir {work_dir} would hold the repository; pick an empty directory"
        )
    if REPO_ROOT in work_dir.parents and work_dir.relative_to(REPO_ROOT).parts[0] != RUNS_DIR:
        raise ConfigError(
            f"--work-dir {work_dir} lies inside the repository "
            f"({work_dir.relative_to(REPO_ROOT).parts[0]}/): a run there writes into its "
            f"source; pick a directory outside it, or {RUNS_DIR}/NAME (git ignores it)"
        )
    return work_dir


def trial_env() -> dict[str, str]:
    """The environment for a child ``python -m trial``: this checkout first on PYTHONPATH."""
    existing = os.environ.get("PYTHONPATH")
    path = f"{REPO_ROOT}{os.pathsep}{existing}" if existing else str(REPO_ROOT)
    return {**os.environ, "PYTHONPATH": path}
