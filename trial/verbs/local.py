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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from errors import ConfigError, TrainingError
from trial.settings.preflight import checked_config, command_line_overrides
from trial.settings.config import layer, resolve_base
from trial.ui.console import LOG_FILE, quiet_library_warnings, summary
from trial.runtime.data import resolve_data
from trial.settings.hparams import (
    EXPERIMENTS_DIR,
    REPO_ROOT,
    experiment_for_model,
    load_experiment,
    local_hparams,
    model_ref,
)
from trial.runtime.ranks import run_forwarding_signals
from trial.verbs.options import directory_option
from trial.verbs.outdir import atomic_file
from trial.settings.local_profile import SHAPES_MAX_ITERS, shapes_hparams
from trial.runtime.train import resume_checkpoint
from trial.runtime.workdir import CHECKPOINTS, check_resume_model, check_start, clear_run

# A CPU-sized profile applied on top of the experiment's hyperparameters for local runs: small
# images and batches, no ImageNet download (unreachable here), frequent logging, and AdamW, which
# learns from scratch in a few hundred iterations where the 1x recipe's SGD (tuned for ImageNet
# weights) stays at 0 mAP (measured on the shapes set). --set and --hparam win over it.
LOCAL_HPARAMS = {
    "global_batch_size": 4,
    "pretrained": False,
    "image_scale": [128, 128],
    "num_workers": 2,
    "log_interval": 10,
    "optim_wrapper.optimizer": {"type": "AdamW", "lr": 0.0005, "weight_decay": 0.0001},
}
DEFAULT_MAX_ITERS = 200  # the local length; --hparam max_iters and then --max-iters win over it


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
    experiment = _local_experiment(request)
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


def _local_experiment(request: LocalTrain) -> dict:
    """The bundled experiment for the model (or retinanet's as a template) with the local profile."""
    path = Path(request.experiment) if request.experiment else experiment_for_model(request.model)
    if request.config:
        config = Path(request.config).expanduser().resolve()
        if not config.is_file():
            raise ConfigError(
                f"--config {config} does not exist; pass an mmdet 3.x config .py file"
            )
        model = str(config)
    else:
        model = resolve_base(request.model) if path is None else request.model
    experiment = load_experiment(path or EXPERIMENTS_DIR / "retinanet.yaml")
    hparams = local_hparams(experiment.get("hyperparameters") or {})
    # The profile replaces what it names (and what lies below it); explicit --set/--hparam are
    # applied over it later, so they always win.
    profile = {
        **layer(LOCAL_HPARAMS, _shapes_profile(request)),
        "max_iters": _default_max_iters(request),
        "model": model,
    }
    experiment["hyperparameters"] = layer(hparams, profile)
    return experiment


def _shapes_profile(request: LocalTrain) -> Mapping[str, Any]:
    """The built-in set's settings (trial/settings/local_profile.py) when a bundled model trains on it."""
    if request.data or request.config or request.experiment:
        return {}
    return shapes_hparams(request.model)


def _default_max_iters(request: LocalTrain) -> int:
    return SHAPES_MAX_ITERS if _shapes_profile(request) else DEFAULT_MAX_ITERS


def local_config(request: LocalTrain) -> Any:
    """The mmengine config a local run of ``request`` trains with (checks everything; no training)."""
    return _preflight(_local_experiment(request), request, _work_dir(request))


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
            Path.cwd() / "work_dirs" / Path(request.model).stem.replace("mmdet::", ""),
            "--work-dir",
        )
    if work_dir == REPO_ROOT or work_dir in REPO_ROOT.parents:
        raise ConfigError(
            f"--work-dir {work_dir} would hold the repository; pick an empty directory"
        )
    return work_dir


def trial_env() -> dict[str, str]:
    """The environment for a child ``python -m trial``: this checkout first on PYTHONPATH."""
    existing = os.environ.get("PYTHONPATH")
    path = f"{REPO_ROOT}{os.pathsep}{existing}" if existing else str(REPO_ROOT)
    return {**os.environ, "PYTHONPATH": path}
