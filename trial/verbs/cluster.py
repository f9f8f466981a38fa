"""``invoke train MODEL --cluster``: validate, assemble a small context directory, submit.

The experiment is checked offline against Determined 0.38.1's rules first (trial/expconf/);
``--dry-run`` stops there and prints what would be sent. With a master, the master's own verdict is
final: the experiment is sent with ``validateOnly`` first, then created, through Determined's Python
API (``determined.common.api``, the client the ``det`` CLI and SDK use).

The context directory is what Determined uploads (size-limited): the trial and staging packages
without their test harnesses (the ``testing/`` folders), errors.py and common.py, and
hooks/startup-hook.sh placed at its root, where Determined runs it before every workload. Nothing
else from the repository travels (the benchmarks live in bench/).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from common import REPO_ROOT, quiet_prints
from errors import ConfigError, TrainingError, one_line
from staging import DataSpec
from trial.expconf import validate_experiment
from trial.settings.hparams import experiment_for_model, experiment_for_run, local_hparams
from trial.settings.overrides import layer
from trial.settings.preflight import (
    check_layer,
    checked_config,
    command_line_overrides,
    model_base,
    slots,
)

CONTEXT_PACKAGES = ("trial", "staging")
CONTEXT_FILES = ("errors.py", "common.py")
# Chosen by folder: the test harnesses (each package's testing/) never travel; the benchmarks live
# outside these packages (bench/) and are not copied at all.
LEFT_OUT = ("__pycache__", "testing")
STARTUP_HOOK = REPO_ROOT / "hooks" / "startup-hook.sh"
DETIGNORE = "__pycache__/\n*.pyc\n*.incomplete\nwork_dirs/\n"
CONTEXT_LIMIT_BYTES = 5 * 1024 * 1024
DEFAULT_MASTER = "http://127.0.0.1:8080"
LOOPBACK_HOSTS = ("localhost", "::1")


@dataclass(frozen=True)
class Submission:
    """What will be sent to the master."""

    experiment: dict
    context_dir: Path
    master: str
    notices: list[str] = field(default_factory=list)

    @property
    def config_text(self) -> str:
        return yaml.safe_dump(self.experiment, sort_keys=False)


def plan_submission(
    model: str,
    *,
    context_dir: Path,
    config: str | None = None,
    sets: Sequence[str] = (),
    hparams: Sequence[str] = (),
    max_iters: int | None = None,
    master: str | None = None,
    experiment_path: str | None = None,
    registry: str | None = None,
) -> Submission:
    """Load + patch + validate the experiment and assemble the context directory (no network).

    ``--hparam``, ``--set`` and ``--max-iters`` land in the experiment's hyperparameters, and the
    trial's own checks (trial/settings/preflight.py, the same as a local run's) run on them first."""
    path = Path(experiment_path) if experiment_path else experiment_for_model(model)
    config_ref = _copy_config(config, context_dir) if config else None
    experiment, chosen = experiment_for_run(model, experiment=experiment_path, config=config_ref)
    own = {**(experiment.get("hyperparameters") or {}), "model": chosen}
    model_file = str(Path(config).expanduser().resolve()) if config else None
    base = model_base(model_file or chosen)
    check_layer(local_hparams(own), base)  # also what --hparam or --max-iters replaces
    merged, overrides = command_line_overrides(own, sets=sets, hparam_items=hparams, model=chosen)
    if max_iters is not None:
        merged["max_iters"] = max_iters
    experiment["hyperparameters"] = layer(merged, overrides)  # the trial reads --set from here
    experiment = _project_images(experiment, registry=registry, local=_local_master(master))
    notices = validate_experiment(experiment, source=str(path or f"experiment for {model}"))
    DataSpec.from_dict(experiment.get("data"))  # what the startup hook and the trial read
    checked_config(  # as the trial reads them: --set is among the hyperparameters
        experiment,
        local_hparams(experiment["hyperparameters"]),
        world_size=slots(experiment),
        model_file=model_file,
        base=base,
    )
    assemble_context(context_dir)
    return Submission(experiment, context_dir, master_url(master), notices)


def describe(sub: Submission) -> str:
    """The dry-run report: notices, the experiment YAML, and the context listing with its size."""
    files = sorted(f for f in sub.context_dir.rglob("*") if f.is_file())
    total = sum(f.stat().st_size for f in files)
    listing = "\n".join(f"  {f.stat().st_size:>8}  {f.relative_to(sub.context_dir)}" for f in files)
    notices = "".join(f"notice: {n}\n" for n in sub.notices)
    return (
        f"{notices}# experiment (valid for Determined 0.38.1; not submitted: --dry-run)\n"
        f"{sub.config_text}\n"
        f"# context directory: {len(files)} files, {total / 1024:.1f} KiB "
        f"(limit {CONTEXT_LIMIT_BYTES // 2**20} MiB)\n{listing}"
    )


def submit(model: str, *, dry_run: bool = False, **kwargs) -> str:
    """Plan; with ``dry_run`` describe it; else ask the master (validateOnly), then create it."""
    with tempfile.TemporaryDirectory(prefix="mmdet-det-") as tmp:
        sub = plan_submission(model, context_dir=Path(tmp) / "context", **kwargs)
        if dry_run:
            return describe(sub)
        _check_master(sub.master)
        from determined.common import api
        from determined.common.api import authentication, bindings
        from determined.common.context import read_v1_context

        with quiet_prints():  # "Preparing files to send to master... 1.2MB and 97 files"
            definition = read_v1_context(sub.context_dir)
        request = bindings.v1CreateExperimentRequest(
            activate=True, config=sub.config_text, modelDefinition=definition
        )
        try:
            session = authentication.login_with_cache(sub.master)
            request.validateOnly = True
            session.post("/api/v1/experiments", json=request.to_json(True))
            request.validateOnly = False
            created = session.post("/api/v1/experiments", json=request.to_json(True)).json()
        except api.errors.MasterNotFoundException:
            raise TrainingError(f"the master at {sub.master} stopped answering") from None
        except api.errors.APIException as err:
            raise ConfigError(
                f"the master at {sub.master} refused the experiment: {one_line(str(err))}"
            ) from None
        except api.errors.BadRequestException as err:  # 401/403: not logged in
            raise TrainingError(
                f"the master at {sub.master} did not accept the login ({one_line(str(err))}); "
                f"run `det -m {sub.master} user login` or set DET_USER and DET_PASS"
            ) from None
        exp_id = created["experiment"]["id"]
        lines = [*(f"notice: {n}" for n in sub.notices)]
        lines += [f"warning: {w}" for w in created.get("warnings") or []]
        lines.append(f"Created experiment {exp_id}: {sub.master}/det/experiments/{exp_id}")
        return "\n".join(lines)


def assemble_context(context_dir: Path) -> Path:
    """Copy the trial code into ``context_dir`` with the startup hook at its root."""
    context_dir.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns(*LEFT_OUT, "*.pyc")
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


def _project_images(experiment: dict, *, registry: str | None, local: bool) -> dict:
    """The experiment with the project's image named as invoke build-image tags it (images/refs.py)."""
    from images.matrix import expand_matrix, load_matrix
    from images.refs import resolve_experiment_images

    return resolve_experiment_images(
        experiment, expand_matrix(load_matrix()), registry=registry, local_cluster=local
    )


def _local_master(master: str | None) -> bool:
    """True for a master named explicitly (``--master`` or ``$DET_MASTER``) on this machine, such as
    ``invoke cluster up``'s: its agents run the images built here. A dry run with no master named
    is checked as for a remote cluster."""
    named = master or os.environ.get("DET_MASTER")
    if not named:
        return False
    host = urllib.parse.urlsplit(_url(named)).hostname or ""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def _copy_config(config: str, context_dir: Path) -> str:
    source = Path(config).expanduser()
    if not source.is_file():
        raise ConfigError(f"--config {source} does not exist; pass an mmdet 3.x config .py file")
    (context_dir / "configs").mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, context_dir / "configs" / source.name)
    return f"configs/{source.name}"


def _url(master: str) -> str:
    return (master if "://" in master else f"http://{master}").rstrip("/")


def _check_master(url: str) -> None:
    check_master(url, otherwise="drop --cluster to train locally")


def master_url(master: str | None) -> str:
    """``master``, else ``$DET_MASTER``, else Determined's default, as an http(s) URL."""
    return _url(master or os.environ.get("DET_MASTER") or DEFAULT_MASTER)


def check_master(url: str, *, otherwise: str, purpose: str = "") -> None:
    """TrainingError (one line: URL, what to set, ``otherwise``) unless ``url/info`` answers."""
    import requests

    try:
        requests.get(f"{url}/info", timeout=5).raise_for_status()
    except requests.RequestException as err:
        raise TrainingError(
            f"no Determined master reachable at {url} ({type(err).__name__}){purpose}; "
            f"set DET_MASTER or pass --master, or {otherwise}"
        ) from None
