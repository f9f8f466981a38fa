"""What a local run will train, decided and checked before anything in its work dir changes.

One truth per run: the experiment a work dir records (``experiment.yaml``) is exactly what its
trial trains — the bundled experiment for MODEL with the CPU profile (trial/settings/local_profile.py)
and then ``--hparam``, ``--set`` and ``--max-iters`` over it — and the model it names is the model
that runs and that the summary reports. ``--resume`` continues that record (its data, its
profile), with the options given now layered over it, and says when there is nothing left to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import REPO_ROOT
from errors import ConfigError
from trial.runtime.data import resolve_data
from trial.runtime.workdir import (
    ASIDE,
    CHECKPOINTS,
    check_resume_model,
    check_start,
    checkpoint_steps,
    has_checkpoint,
    recorded_run,
    resume_checkpoint,
    settle_aside,
)
from trial.settings.hparams import model_ref
from trial.settings.local_profile import local_experiment
from trial.settings.overrides import layer
from trial.settings.preflight import check_layer, checked_config, command_line_overrides, model_base
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


@dataclass(frozen=True)
class LocalPlan:
    """A checked local run: what its work dir records and its trial trains."""

    work_dir: Path
    experiment: dict  # experiment.yaml: every option applied
    data: str | None  # --data (on --resume: the run's own when not given)
    config: Any  # the mmengine config the trial builds, checked
    resumed_at: int | None = None  # steps of the checkpoint --resume continues
    notices: tuple[str, ...] = ()

    @property
    def model(self) -> str:
        return model_ref(self.experiment["hyperparameters"])

    @property
    def max_iters(self) -> int:
        return int(self.config["train_cfg"]["max_iters"])

    @property
    def finished(self) -> bool:
        """--resume of a run already at (or past) its length: nothing to train."""
        return self.resumed_at is not None and self.resumed_at >= self.max_iters


def plan_local(request: LocalTrain) -> LocalPlan:
    """Check everything a local run needs (model, options, data, the work dir) and decide what it
    trains; ConfigError (one line) for any mistake. Changes nothing, except that a previous run
    an interrupted ``--fresh`` had set aside is put back first (trial/runtime/workdir.py)."""
    if request.nproc < 1:
        raise ConfigError(f"--nproc {request.nproc} must be at least 1")
    work_dir = work_dir_of(request)
    if (work_dir / ASIDE).is_dir():
        settle_aside(work_dir, keep_new=has_checkpoint(work_dir))
    check_start(work_dir, resume=request.resume, fresh=request.fresh)
    doc, own = local_experiment(
        request.model, experiment=request.experiment, config=request.config, data=request.data
    )
    model = model_ref(doc["hyperparameters"])
    base = model_base(model)
    check_layer(own, base)  # the experiment's own values, where the CPU profile replaces them
    record, resumed_at = None, None
    if request.resume:
        storage = work_dir / CHECKPOINTS
        storage_id = resume_checkpoint(storage)
        check_resume_model(storage, storage_id, model)
        resumed_at = checkpoint_steps(storage, storage_id)
        record = recorded_run(work_dir)
    if record is not None:
        doc = record.experiment  # continue what the run trained (its profile, its data)
    data = request.data or (record.data if record else None)
    hparams, overrides = command_line_overrides(
        doc["hyperparameters"], sets=request.sets, hparam_items=request.hparams, model=model
    )
    if request.max_iters is not None:
        hparams["max_iters"] = request.max_iters
    experiment = {**doc, "hyperparameters": layer(hparams, overrides)}
    config = checked_config(
        experiment,
        experiment["hyperparameters"],
        data=resolve_data(data, experiment),
        work_dir=str(work_dir / "run"),
        world_size=request.nproc,
        base=base,
    )
    notices = _rank_notice(record.nproc, request.nproc, work_dir) if record else ()
    return LocalPlan(work_dir, experiment, data, config, resumed_at, notices)


def work_dir_of(request: LocalTrain) -> Path:
    """``--work-dir`` (default ``./work_dirs/MODEL``): never the repository's source."""
    default = Path.cwd() / RUNS_DIR / Path(request.model).stem.replace("mmdet::", "")
    work_dir = directory_option(request.work_dir or default, "--work-dir")
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


def _rank_notice(trained: int, now: int, work_dir: Path) -> tuple[str, ...]:
    if trained == now:
        return ()
    return (
        f"--resume with {now} rank(s): the run in {work_dir} trained with {trained}; it "
        f"continues with the same global batch, but not the same data order (--nproc {trained} "
        "continues it exactly)",
    )
