"""``invoke export SOURCE --out DIR``: a trial's checkpoint as a plain MMDetection model.

SOURCE is a local work directory (its newest checkpoint), a checkpoint directory (with
``checkpoint.pth``), an mmengine ``.pth`` file, or a Determined checkpoint UUID (downloaded through
Determined's SDK). The config is taken from the checkpoint itself (mmengine stores the resolved
config in ``meta.cfg``), made standalone by ``trial.verbs.artifact``, and checked: the weights must load
into a model built from it. ``resolve_model`` gives ``invoke eval`` / ``invoke predict`` the same
export for any SOURCE, so they always run exactly what an export would ship.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import file_sha256
from errors import ConfigError, ProjectError, one_line
from trial.engine.hook import CHECKPOINT_FILE  # what DetCoreHook stores
from trial.verbs import artifact
from trial.verbs.outdir import atomic_dir

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
SOURCE_HELP = (
    "expected a work directory (with checkpoints/), a checkpoint directory (with checkpoint.pth), "
    "an mmengine .pth file or a Determined checkpoint UUID"
)


@dataclass(frozen=True)
class Source:
    """A checkpoint file found from what the user typed, with what is known about its run."""

    given: str
    checkpoint: Path
    storage_id: str | None = None
    work_dir: Path | None = None  # the local run it belongs to (metrics.jsonl), when known
    validation: Mapping[str, float] = field(default_factory=dict)  # from the master, for a UUID


def export_model(source: str, out: str | Path, *, master: str | None = None) -> dict:
    """Write the export of SOURCE into the new directory ``out``; returns its export.json."""
    with atomic_dir(out) as tmp, _located(source, master=master) as located:
        return write_export(located, tmp)


@contextlib.contextmanager
def resolve_model(model: str, *, master: str | None = None) -> Iterator[Path]:
    """An export directory for MODEL: MODEL itself if it is one, else a temporary export of it."""
    path = Path(model).expanduser()
    if is_export_dir(path):
        yield path.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="mmdet-det-export-") as tmp:
        with _located(model, master=master) as located:
            write_export(located, Path(tmp))
        yield Path(tmp)


def pick_device(device: str | None) -> str:
    """``--device`` checked against this machine, else the first CUDA device when there is one,
    else the CPU (trial/verbs/options.py)."""
    from trial.verbs.options import torch_device

    return torch_device(device)


def is_export_dir(path: Path) -> bool:
    """Whether ``path`` holds an export (config.py + model.pth)."""
    return (path / artifact.CONFIG_FILE).is_file() and (path / artifact.WEIGHTS_FILE).is_file()


def locate(source: str, *, download_dir: Path, master: str | None = None) -> Source:
    """Find the checkpoint file SOURCE means; a UUID is downloaded into ``download_dir``."""
    path = Path(source).expanduser()
    if path.is_file():
        folder = path.resolve().parent  # <work-dir>/checkpoints/<id>/ for the trial's own files
        storage_id = folder.name if (folder / "metadata.json").is_file() else None
        return Source(source, path.resolve(), storage_id, _owning_work_dir(folder.parent))
    if path.is_dir():
        return _locate_dir(source, path.resolve())
    if UUID_RE.fullmatch(source):
        return _download(source, download_dir, master=master)
    raise ConfigError(
        f"SOURCE {source!r} does not exist and is not a checkpoint UUID; {SOURCE_HELP}"
    )


def write_export(source: Source, out: Path) -> dict:
    """Write config.py, model.pth, export.json and README.md of ``source`` into ``out``."""
    import torch
    from mmengine.config import Config

    checkpoint = load_checkpoint(source.checkpoint)
    meta = checkpoint["meta"]
    try:
        train_cfg = Config.fromstring(meta["cfg"], file_format=".py")
    except (SyntaxError, ImportError, ValueError, KeyError) as err:
        raise ConfigError(
            f"the config stored in {source.checkpoint} does not load here ({one_line(err)[:200]})"
        ) from err
    dataset_meta = meta.get("dataset_meta") or {}
    classes = list(dataset_meta.get("classes") or [])
    if not classes:
        raise ConfigError(
            f"{source.checkpoint} has no class names in meta.dataset_meta; {SOURCE_HELP}"
        )
    cfg = artifact.standalone_config(
        train_cfg.to_dict(), classes=classes, palette=dataset_meta.get("palette")
    )
    config_text = Config(cfg).pretty_text
    (out / artifact.CONFIG_FILE).write_text(
        f"# exported by mmdet-determined from {source.storage_id or source.checkpoint.name}; "
        "loads with stock mmdet\n" + config_text
    )
    weights = {
        "meta": {
            "dataset_meta": cfg["metainfo"],
            "iter": _steps(source, meta),
            "mmengine_version": str(meta.get("mmengine_version", "")),
        },
        "state_dict": checkpoint["state_dict"],
    }
    torch.save(weights, out / artifact.WEIGHTS_FILE)
    _check_loads(out)
    info = _provenance(source, train_cfg, meta, classes, out)
    (out / artifact.INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    (out / artifact.README_FILE).write_text(artifact.readme_text(info))
    return info


def load_checkpoint(path: Path) -> dict:
    """An mmengine training checkpoint (full pickle: the user's own, trusted file)."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises anything from UnpicklingError to RuntimeError
        raise ConfigError(
            f"{path} is not a readable checkpoint ({type(err).__name__}); {SOURCE_HELP}"
        ) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(f"{path} holds no state_dict: not an mmengine checkpoint; {SOURCE_HELP}")
    if not isinstance(checkpoint.get("meta"), dict) or not checkpoint["meta"].get("cfg"):
        raise ConfigError(
            f"{path} has no config in meta.cfg (not saved by mmengine's Runner); {SOURCE_HELP}"
        )
    return checkpoint


@contextlib.contextmanager
def _located(source: str, *, master: str | None) -> Iterator[Source]:
    path = Path(source).expanduser()
    if is_export_dir(path) and not (path / CHECKPOINT_FILE).exists():
        raise ConfigError(f"SOURCE {path} is already an export; use it as MODEL for eval/predict")
    with tempfile.TemporaryDirectory(prefix="mmdet-det-download-") as tmp:
        yield locate(source, download_dir=Path(tmp), master=master)


def _locate_dir(given: str, path: Path) -> Source:
    from trial.runtime.workdir import latest_local_checkpoint

    if (path / CHECKPOINT_FILE).is_file():
        return Source(given, path / CHECKPOINT_FILE, path.name, _owning_work_dir(path.parent))
    if (path / "checkpoints").is_dir():
        storage_id = latest_local_checkpoint(path / "checkpoints")
        if storage_id is None:
            raise ConfigError(f"work directory {path} has no checkpoint yet; train first")
        return Source(given, path / "checkpoints" / storage_id / CHECKPOINT_FILE, storage_id, path)
    raise ConfigError(f"SOURCE {path} is not a checkpoint: {SOURCE_HELP}")


def _owning_work_dir(storage_parent: Path) -> Path | None:
    """``<work-dir>`` when a checkpoint lives in ``<work-dir>/checkpoints/<id>/``."""
    work_dir = storage_parent.parent
    if storage_parent.name == "checkpoints" and (work_dir / "metrics.jsonl").is_file():
        return work_dir
    return None


def _download(uuid: str, download_dir: Path, *, master: str | None) -> Source:
    """Fetch a Determined checkpoint through the SDK (the master says where it is stored)."""
    url = _reachable_master(master)
    from determined import errors as det_errors
    from determined.common.api import errors as api_errors
    from determined.experimental import client

    try:
        checkpoint = client.Determined(master=url).get_checkpoint(uuid)
        state = getattr(checkpoint.state, "value", str(checkpoint.state))
        if state.endswith("DELETED") and not state.endswith("PARTIALLY_DELETED"):
            raise ConfigError(
                f"Determined checkpoint {uuid} at {url} was deleted by checkpoint GC (the "
                "experiment's checkpoint_storage.save_* policy); export one it kept, e.g. "
                "the experiment's best (det experiment list-checkpoints)"
            )
        target = Path(checkpoint.download(str(download_dir / uuid)))
    except (
        api_errors.BadRequestException,
        api_errors.BadResponseException,
        det_errors.CheckpointStateException,
    ) as err:
        raise ConfigError(f"Determined checkpoint {uuid} at {url}: {one_line(err)}") from err
    if not (target / CHECKPOINT_FILE).is_file():
        raise ConfigError(
            f"Determined checkpoint {uuid} has no {CHECKPOINT_FILE}: not from the bundled trial"
        )
    metrics = checkpoint.training.validation_metrics if checkpoint.training else {}
    metrics = metrics.get("avgMetrics", metrics) if isinstance(metrics, dict) else {}
    return Source(uuid, target / CHECKPOINT_FILE, uuid, validation=metrics)


def _reachable_master(master: str | None) -> str:
    from trial.verbs.cluster import check_master, master_url

    url = master_url(master)
    check_master(
        url,
        purpose=" to download checkpoint SOURCE",
        otherwise="export a local work/checkpoint directory",
    )
    return url


def _check_loads(out: Path) -> None:
    """Build the model from the exported config, load model.pth into it strictly.

    ``weights_only=True`` is the point of model.pth: stock mmdet on torch >= 2.6 loads it without
    opting out of torch's safe loading.
    """
    import torch
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    cfg = Config.fromfile(str(out / artifact.CONFIG_FILE))
    init_default_scope(cfg.get("default_scope", "mmdet"))
    model = MODELS.build(cfg.model)
    weights = torch.load(out / artifact.WEIGHTS_FILE, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(weights["state_dict"], strict=True)
    except RuntimeError as err:
        raise ProjectError(
            "the exported config builds a model the checkpoint's weights do not fit "
            f"({one_line(err)[:300]}); please report this with the checkpoint's config"
        ) from err


def _provenance(source: Source, train_cfg: Any, meta: Mapping, classes: list, out: Path) -> dict:
    import mmcv
    import mmdet
    import mmengine
    import torch

    steps = _steps(source, meta)
    return {
        "format": artifact.EXPORT_FORMAT,
        "model": _model_name(source),
        "iterations": steps,
        "validation": dict(source.validation) or _local_validation(source.work_dir, steps),
        "source": {
            "given": source.given,
            "checkpoint": source.storage_id or str(source.checkpoint),
            "trained_at": meta.get("time"),
        },
        "categories": artifact.categories_for(classes, _annotation_categories(train_cfg)),
        "files": {
            name: file_sha256(out / name) for name in (artifact.CONFIG_FILE, artifact.WEIGHTS_FILE)
        },
        "versions": {
            "mmdet": mmdet.__version__,
            "mmengine": mmengine.__version__,
            "mmcv": mmcv.__version__,
            "torch": torch.__version__,
        },
        "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _model_name(source: Source) -> str:
    return str(_determined_metadata(source).get("model") or source.checkpoint.parent.name)


def _steps(source: Source, meta: Mapping) -> int:
    """Iterations trained: Determined's ``steps_completed``, else mmengine's ``meta.iter``.

    (mmengine writes ``iter + 1`` for a save outside the loop, e.g. the trial's final one.)
    """
    steps = _determined_metadata(source).get("steps_completed")
    return int(steps if steps is not None else meta.get("iter", 0))


def _determined_metadata(source: Source) -> dict:
    """The checkpoint's metadata.json (Determined's storage writes it beside checkpoint.pth)."""
    path = source.checkpoint.parent / "metadata.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def _local_validation(work_dir: Path | None, steps: int) -> dict:
    """The validation a local run reported at the checkpoint's step (metrics.jsonl)."""
    from trial.runtime.metrics_log import read_metrics_log

    if work_dir is None:
        return {}
    records = [
        r
        for r in read_metrics_log(work_dir / "metrics.jsonl")
        if r["group"] == "validation" and r["steps_completed"] <= steps
    ]
    return dict(records[-1]["metrics"]) if records else {}


def _annotation_categories(train_cfg: Any) -> list | None:
    """The val annotation file's categories when it is readable here (ids for predictions)."""
    ann = (train_cfg.get("val_evaluator") or {}).get("ann_file")
    if not ann or not Path(ann).is_file():
        return None
    try:
        return json.loads(Path(ann).read_text()).get("categories")
    except (OSError, ValueError):
        return None
