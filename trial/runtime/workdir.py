"""One local run per work directory: what a run leaves there, its readers (the newest complete
checkpoint), and the checks before another run starts.

A work directory holds one run's truth: its checkpoints, ``metrics.jsonl``, ``result.json``,
curves and TensorBoard events, and the record of what it trains (``experiment.yaml``: the
experiment with every option applied; ``launch.json``: the local data and ranks), which
``--resume`` continues from. Starting a second run over them would mix two runs (``invoke
export`` would take the older run's newest checkpoint, ``metrics.jsonl`` would append), so a new
run there needs ``--resume`` (continue it, same model) or ``--fresh`` (replace it: the previous run
is set aside and deleted only once the new one has a checkpoint; a new run that fails before that
gives it back).
"""

from __future__ import annotations

import json
import logging
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from common import write_atomic
from errors import ConfigError

logger = logging.getLogger("trial")

CHECKPOINTS = "checkpoints"
EXPERIMENT_FILE = "experiment.yaml"
LAUNCH_FILE = "launch.json"
FAILED_LOG = "failed-run.log"  # the log of a --fresh run that failed and gave the old run back
ASIDE = ".previous-run"  # where --fresh keeps the previous run until the new one has a checkpoint
# Everything a local run writes into its work directory.
RUN_OUTPUTS = (
    CHECKPOINTS, "metrics.jsonl", "result.json", "curves.png", "tensorboard", "run",
    "preempt.request", "train.log", "train-rank*.log", "predictions.png", EXPERIMENT_FILE,
    LAUNCH_FILE, FAILED_LOG,
)  # fmt: skip
# (names are glob patterns; train*.log and predictions.png are trial/ui/console.py's)
MARKS = (CHECKPOINTS, "metrics.jsonl", "result.json")  # present: a run happened here


def previous_run(work_dir: Path) -> str | None:
    """A few words on the run ``work_dir`` already holds (``2 checkpoints, metrics.jsonl``), or
    None when it holds none."""
    found = []
    storage = Path(work_dir) / CHECKPOINTS
    count = sum(1 for _ in storage.iterdir()) if storage.is_dir() else 0
    if count:
        found.append(f"{count} checkpoint{'s' if count > 1 else ''}")
    found += [name for name in MARKS[1:] if (Path(work_dir) / name).exists()]
    return ", ".join(found) or None


def check_start(work_dir: Path, *, resume: bool, fresh: bool) -> None:
    """Refuse to start a new run over a previous one unless told how (``--resume``/``--fresh``)."""
    if resume and fresh:
        raise ConfigError("--resume and --fresh exclude each other: continue the run or replace it")
    held = previous_run(work_dir)
    if held and not resume and not fresh:
        raise ConfigError(
            f"--work-dir {work_dir} already holds a run ({held}); continue it with --resume, "
            "replace it with --fresh (deletes that run), or pick another --work-dir"
        )


def clear_run(work_dir: Path) -> None:
    """Delete what a run left in ``work_dir``; other files stay."""
    for path in _outputs(work_dir):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


@dataclass(frozen=True)
class RunRecord:
    """What a local run in a work directory trains: the experiment, its data and ranks."""

    experiment: dict
    data: str | None
    nproc: int


def record_run(work_dir: Path, record: RunRecord) -> None:
    """Write ``experiment.yaml`` and ``launch.json`` (each atomically) before the run starts."""
    write_atomic(work_dir / EXPERIMENT_FILE, yaml.safe_dump(record.experiment, sort_keys=False))
    launch = {"data": record.data, "nproc": record.nproc}
    write_atomic(work_dir / LAUNCH_FILE, json.dumps(launch, indent=2) + "\n")


def recorded_run(work_dir: Path) -> RunRecord | None:
    """The record a previous run left in ``work_dir`` (None without ``experiment.yaml``)."""
    path, launch_path = Path(work_dir) / EXPERIMENT_FILE, Path(work_dir) / LAUNCH_FILE
    if not path.exists():
        return None
    try:
        experiment = yaml.safe_load(path.read_text())
        launch = json.loads(launch_path.read_text()) if launch_path.exists() else {}
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise ConfigError(
            f"--resume: cannot read {path.name} or {launch_path.name} in {work_dir} ({err}); "
            "fix or delete them (the run is then resumed with today's options)"
        ) from None
    if not isinstance(experiment, dict) or not isinstance(launch, dict):
        return None
    return RunRecord(experiment, launch.get("data"), int(launch.get("nproc") or 1))


def set_aside(work_dir: Path) -> Path | None:
    """``--fresh``: move the previous run out of the way into ``<work-dir>/.previous-run``."""
    found = _outputs(work_dir)
    if not found:
        return None
    aside = Path(work_dir) / ASIDE
    shutil.rmtree(aside, ignore_errors=True)
    aside.mkdir()
    for path in found:
        path.rename(aside / path.name)
    return aside


def settle_aside(work_dir: Path, *, keep_new: bool) -> None:
    """After a ``--fresh`` run: delete the previous run (``keep_new``), or give it back and keep
    the new run's log as ``failed-run.log``."""
    work_dir = Path(work_dir)
    aside = work_dir / ASIDE
    if not aside.is_dir():
        return
    if keep_new:
        shutil.rmtree(aside)
        return
    log, kept = work_dir / "train.log", work_dir / f"{ASIDE}.log"
    if log.exists():
        log.rename(kept)  # a name clear_run leaves alone
    clear_run(work_dir)
    for path in aside.iterdir():
        path.rename(work_dir / path.name)
    aside.rmdir()
    if kept.exists():
        kept.rename(work_dir / FAILED_LOG)


def has_checkpoint(work_dir: Path) -> bool:
    """Whether the run in ``work_dir`` wrote a checkpoint (it can be resumed)."""
    storage = Path(work_dir) / CHECKPOINTS
    return storage.is_dir() and any(storage.iterdir())


def checkpoint_steps(storage_dir: Path, storage_id: str) -> int:
    """``steps_completed`` of a local checkpoint (0 when its metadata does not say)."""
    try:
        meta = json.loads((Path(storage_dir) / storage_id / "metadata.json").read_text())
        return int(meta.get("steps_completed", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0


def _outputs(work_dir: Path) -> list[Path]:
    return [p for name in RUN_OUTPUTS for p in Path(work_dir).glob(name)]


def check_resume_model(storage_dir: Path, storage_id: str, model: str) -> None:
    """The checkpoint ``--resume`` continues must be of the model asked for."""
    meta = Path(storage_dir) / storage_id / "metadata.json"
    try:
        trained = json.loads(meta.read_text()).get("model")
    except (OSError, ValueError, AttributeError):
        trained = None
    if trained and trained != model:
        raise ConfigError(
            f"--resume: the newest checkpoint in {storage_dir} ({storage_id}) is of model "
            f"{trained!r}, not {model!r}; resume it as {trained}, or train {model} in another "
            "--work-dir (or here with --fresh)"
        )


def latest_local_checkpoint(storage_dir: Path) -> str | None:
    """The storage id of the newest *valid* checkpoint (by steps_completed) in a local checkpoint
    directory, or None when there is none. Incomplete or corrupt ones are skipped with a warning."""
    found = []
    for meta in Path(storage_dir).glob("*/metadata.json"):
        try:
            steps = int(json.loads(meta.read_text()).get("steps_completed", -1))
        except (ValueError, TypeError, AttributeError):
            steps = -1
        found.append((steps, meta.parent))
    for steps, folder in sorted(found, key=lambda item: item[0], reverse=True):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder.name
        logger.warning("skipping checkpoint %s (step %d): %s", folder.name, steps, problem)
    return None


def resume_checkpoint(storage_dir: Path) -> str:
    """The checkpoint ``--resume`` continues from; a ConfigError (one line) when there is none."""
    storage_id = latest_local_checkpoint(storage_dir)
    if storage_id is None:
        seen = [p.name for p in Path(storage_dir).iterdir()] if Path(storage_dir).is_dir() else []
        why = f"{len(seen)} found, none complete and readable" if seen else "there are none"
        raise ConfigError(
            f"--resume: no valid checkpoint in {storage_dir} ({why}); "
            "run without --resume to start from scratch"
        )
    return storage_id


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a resumable checkpoint (missing or truncated file), or None."""
    from trial.engine.hook import CHECKPOINT_FILE

    path = Path(folder) / CHECKPOINT_FILE
    if not path.is_file():
        return f"{CHECKPOINT_FILE} is missing"
    try:  # torch.save writes a zip archive; a truncated one fails its central directory or CRCs
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError) as err:
        return f"{CHECKPOINT_FILE} is truncated or corrupt ({err})"
    return f"{CHECKPOINT_FILE} is corrupt (bad member {bad})" if bad else None
