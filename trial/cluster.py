"""``invoke train MODEL --cluster``: validate, assemble a small context directory, submit.

The context directory is what Determined uploads (size-limited): the trial and staging packages,
errors.py, and hooks/startup-hook.sh placed at its root, where Determined runs it before every
workload. Nothing else from the repository travels.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from errors import ConfigError, TrainingError
from trial.config import parse_set_options, resolve_base
from trial.expconf import validate_experiment
from trial.experiment import EXPERIMENTS_DIR, REPO_ROOT, experiment_for_model, load_experiment

CONTEXT_PACKAGES = ("trial", "staging")
CONTEXT_FILES = ("errors.py",)
STARTUP_HOOK = REPO_ROOT / "hooks" / "startup-hook.sh"
DETIGNORE = "__pycache__/\n*.pyc\n*.incomplete\nwork_dirs/\n"
CONTEXT_LIMIT_BYTES = 5 * 1024 * 1024


@dataclass(frozen=True)
class Submission:
    """What will be sent to the master."""

    experiment: dict
    context_dir: Path
    master: str
    command: list[str]


def plan_submission(
    model: str,
    *,
    context_dir: Path,
    config: str | None = None,
    sets: Sequence[str] = (),
    master: str | None = None,
    experiment_path: str | None = None,
) -> Submission:
    """Load + patch + validate the experiment and assemble the context directory (no network)."""
    path = Path(experiment_path) if experiment_path else experiment_for_model(model)
    experiment = load_experiment(path or EXPERIMENTS_DIR / "retinanet.yaml")
    hparams = dict(experiment.get("hyperparameters") or {})
    if config:
        hparams["model"] = _copy_config(config, context_dir)
    elif path is None:
        hparams["model"] = resolve_base(model)
    hparams.update(parse_set_options(list(sets)))
    experiment["hyperparameters"] = hparams
    validate_experiment(experiment, source=str(path or f"experiment for {model}"))
    assemble_context(context_dir)
    exp_file = context_dir.parent / "experiment.yaml"
    exp_file.write_text(yaml.safe_dump(experiment, sort_keys=False))
    master = master or os.environ.get("DET_MASTER") or "http://127.0.0.1:8080"
    command = [
        sys.executable,
        "-m",
        "determined.cli",
        "-m",
        master,
        "experiment",
        "create",
        str(exp_file),
        str(context_dir),
    ]
    return Submission(experiment, context_dir, master, command)


def submit(model: str, **kwargs) -> str:
    """Plan, check the master is reachable, run ``det experiment create``; returns its output."""
    with tempfile.TemporaryDirectory(prefix="mmdet-det-") as tmp:
        sub = plan_submission(model, context_dir=Path(tmp) / "context", **kwargs)
        _check_master(sub.master)
        proc = subprocess.run(sub.command, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise TrainingError(f"det experiment create failed against {sub.master}: {last[0]}")
        return proc.stdout


def assemble_context(context_dir: Path) -> Path:
    """Copy the trial code into ``context_dir`` with the startup hook at its root."""
    context_dir.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "bench.py")
    for package in CONTEXT_PACKAGES:
        shutil.copytree(
            REPO_ROOT / package, context_dir / package, ignore=ignore, dirs_exist_ok=True
        )
    for name in CONTEXT_FILES:
        shutil.copy2(REPO_ROOT / name, context_dir / name)
    if not STARTUP_HOOK.exists():
        raise TrainingError(f"{STARTUP_HOOK} is missing; the context needs it to stage data")
    shutil.copy2(STARTUP_HOOK, context_dir / "startup-hook.sh")
    (context_dir / ".detignore").write_text(DETIGNORE)
    size = sum(f.stat().st_size for f in context_dir.rglob("*") if f.is_file())
    if size > CONTEXT_LIMIT_BYTES:
        raise TrainingError(f"context directory {context_dir} is {size} bytes; keep it under 5 MB")
    return context_dir


def _copy_config(config: str, context_dir: Path) -> str:
    source = Path(config).expanduser()
    if not source.is_file():
        raise ConfigError(f"--config {source} does not exist; pass an mmdet 3.x config .py file")
    (context_dir / "configs").mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, context_dir / "configs" / source.name)
    return f"configs/{source.name}"


def _check_master(master: str) -> None:
    import requests

    url = master if "://" in master else f"http://{master}"
    try:
        requests.get(f"{url.rstrip('/')}/info", timeout=5).raise_for_status()
    except requests.RequestException as err:
        raise TrainingError(
            f"no Determined master reachable at {url} ({type(err).__name__}); "
            "set DET_MASTER or pass --master, or drop --cluster to train locally"
        ) from None
