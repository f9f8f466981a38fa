"""Build the mmengine Config a trial runs: an mmdet base config plus data, schedule and overrides.

Everything here is pure (it reads mmdet's bundled config files, nothing else), so it tests fast and
``--dry-run`` can print the exact config. mmdet's 1x schedules are epoch-based; Determined measures
length in batches, so the loop becomes an iteration loop and epoch-based parameter schedulers
are rescaled onto iterations (12 epochs -> max_iters, milestones [8, 11] -> [8/12, 11/12] of it).
The loop is ``ResumableIterBasedTrainLoop`` (trial/engine/resume.py): mmengine's ``IterBasedTrainLoop``
whose resume positions the samplers at iteration N instead of replaying N batches.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from errors import ConfigError, one_line
from trial.settings.overrides import apply_overrides
from trial.settings.tensorboard import apply_tensorboard

MODELS = {
    "retinanet": "mmdet::retinanet/retinanet_r50_fpn_1x_coco.py",
    "maskrcnn": "mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py",
    "gfl": "mmdet::gfl/gfl_r50_fpn_1x_coco.py",
}
SCHEDULER_LENGTH_KEYS = ("begin", "end", "T_max", "step_size")


@dataclass(frozen=True)
class DataPaths:
    """Where one COCO-layout dataset lives, as the mmdet datasets and CocoMetric need it."""

    train_ann: str
    val_ann: str
    train_images: str
    val_images: str
    backend_args: Mapping[str, Any] | None = None
    ann_cache: str | None = (
        None  # node cache root for parsed annotations (trial/engine/anncache.py)
    )


@dataclass(frozen=True)
class TrainSettings:
    """The trial-level knobs applied on top of the base config."""

    data: DataPaths
    work_dir: str
    max_iters: int
    val_interval: int
    checkpoint_interval: int
    batch_size: int | None = None
    num_workers: int | None = None
    image_scale: tuple[int, int] | None = None
    log_interval: int = 50
    pretrained: bool = True
    launcher: str = "none"
    seed: int | None = 0
    overrides: Mapping[str, Any] = field(default_factory=dict)


def resolve_base(model: str) -> str:
    """Map a model name, an ``mmdet::`` path or a ``.py`` file to a config reference."""
    if model in MODELS:
        return MODELS[model]
    if model.startswith("mmdet::") or model.endswith(".py"):
        return model
    raise ConfigError(
        f"unknown model {model!r}; choose one of {', '.join(MODELS)}, "
        "an mmdet config like mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py, or --config FILE.py"
    )


def load_base_config(ref: str) -> Any:
    """Load an mmdet config by reference (``mmdet::...`` resolves inside the installed mmdet)."""
    from mmengine.config import Config

    try:
        if ref.startswith("mmdet::"):
            from mmengine.hub import get_config

            return get_config(ref)
        return Config.fromfile(ref)
    except Exception as err:  # a user's config file runs as Python: SyntaxError, NameError, ...
        raise ConfigError(
            f"cannot load config {ref!r}: {type(err).__name__}: {one_line(err)[:300]}; "
            "fix the file (it must be an mmdet 3.x config)"
        ) from err


def build_config(base: Any, settings: TrainSettings) -> Any:
    """Return a new Config: ``base`` with data, iteration schedule, hooks and overrides applied.

    The config names the trial's own registered types, so building it registers them: any Runner
    built from it (the trial, a benchmark, a test) finds them.
    """
    # registers NodeCachedCocoDataset, SparseDetVisualizationHook, ZeroSafeCocoMetric,
    # ResumableIterBasedTrainLoop (+samplers)
    import trial.engine.cached_dataset
    import trial.engine.drawing
    import trial.engine.metrics
    import trial.engine.resume  # noqa: F401

    cfg = copy.deepcopy(base)
    _apply_data(cfg, settings.data)
    _apply_schedule(cfg, settings)
    _apply_runtime(cfg, settings)
    apply_tensorboard(cfg, backend_args=settings.data.backend_args)
    if not settings.pretrained:
        _drop_pretrained(cfg)
    if settings.image_scale:
        _apply_image_scale(cfg, settings.image_scale)
    apply_overrides(cfg, settings.overrides)
    _use_node_cache(cfg, settings.data.ann_cache)
    return cfg


def _apply_data(cfg: Any, data: DataPaths) -> None:
    splits = {
        "train_dataloader": (data.train_ann, data.train_images),
        "val_dataloader": (data.val_ann, data.val_images),
        "test_dataloader": (data.val_ann, data.val_images),
    }
    for loader, (ann, images) in splits.items():
        dataset = _innermost_dataset(cfg[loader]["dataset"])
        dataset.update(data_root="", ann_file=ann, data_prefix=dict(img=images))
        dataset["backend_args"] = None  # the dataset opens the annotation file: always local
        for step in dataset.get("pipeline", []):
            if step.get("type") == "LoadImageFromFile":
                step["backend_args"] = dict(data.backend_args) if data.backend_args else None
    for evaluator in ("val_evaluator", "test_evaluator"):
        cfg[evaluator]["ann_file"] = data.val_ann
        cfg[evaluator]["backend_args"] = None  # annotations are always on local disk
        if cfg[evaluator].get("type") == "CocoMetric":  # same numbers; 0.0 instead of nothing
            cfg[evaluator]["type"] = "ZeroSafeCocoMetric"


def _use_node_cache(cfg: Any, ann_cache: str | None) -> None:
    """Parse COCO annotations once per node (trial/engine/cached_dataset.py), after the user's overrides:
    a dataset type they chose stays as it is."""
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        dataset = _innermost_dataset(cfg[loader]["dataset"]) if cfg.get(loader) else {}
        if ann_cache and dataset.get("type") == "CocoDataset":
            dataset.update(type="NodeCachedCocoDataset", cache_dir=ann_cache)


def _innermost_dataset(dataset: dict) -> dict:
    while "dataset" in dataset:  # RepeatDataset / ClassBalancedDataset wrappers
        dataset = dataset["dataset"]
    return dataset


def _apply_schedule(cfg: Any, settings: TrainSettings) -> None:
    max_epochs = cfg.get("train_cfg", {}).get("max_epochs")
    cfg["train_cfg"] = dict(  # registered by trial.engine.resume, which the process imports
        type="ResumableIterBasedTrainLoop",
        max_iters=settings.max_iters,
        val_interval=settings.val_interval,
    )
    rescaled = [
        _rescale_scheduler(s, max_epochs=max_epochs, max_iters=settings.max_iters)
        for s in _as_list(cfg.get("param_scheduler"))
    ]
    cfg["param_scheduler"] = [s for s in rescaled if s is not None]
    loader = cfg["train_dataloader"]
    loader["sampler"] = dict(type="InfiniteSampler", shuffle=True)
    if settings.batch_size:
        loader["batch_size"] = settings.batch_size
    if settings.num_workers is not None:
        for name in ("train_dataloader", "val_dataloader", "test_dataloader"):
            cfg[name]["num_workers"] = settings.num_workers
            cfg[name]["persistent_workers"] = settings.num_workers > 0


def _rescale_scheduler(sched: dict, *, max_epochs: int | None, max_iters: int) -> dict | None:
    """``sched`` on the run's iterations; None when a warmup has no room in a short run.

    A scheduler squeezed into fewer than two iterations (a 500-iteration warmup in a 4-iteration
    run, one of 12 epochs in 10 iterations) would never leave its first step: LinearLR holds its
    start factor (0.001) for the whole run. It gets two iterations, the fewest that reach the
    configured lr, and is dropped where those would take more than half the run."""
    sched, squeezed = dict(sched), False
    if sched.get("by_epoch", True) and max_epochs:
        scale = max_iters / max_epochs
        for key in SCHEDULER_LENGTH_KEYS:
            if key in sched:
                sched[key] = max(1, round(sched[key] * scale)) if sched[key] else 0
        if "milestones" in sched:
            sched["milestones"] = [max(1, round(m * scale)) for m in sched["milestones"]]
        sched["by_epoch"] = False
    elif sched.get("end", 0) >= max_iters:  # a warmup longer than a short run: keep it a warmup
        sched["end"], squeezed = sched.get("begin", 0) + max(2, max_iters // 5), True
    begin = sched.get("begin", 0)
    if "end" in sched and sched["end"] - begin < 2:
        sched["end"], squeezed = begin + 2, True
    if squeezed and sched["end"] - begin > max_iters // 2:
        return None  # no room for a warmup: a short run trains at the configured lr
    return sched


def _apply_runtime(cfg: Any, settings: TrainSettings) -> None:
    cfg["work_dir"] = settings.work_dir
    cfg["launcher"] = settings.launcher
    hooks = cfg.setdefault("default_hooks", {})
    hooks["checkpoint"] = None  # DetCoreHook saves through Determined's checkpoint storage
    # log_metric_by_epoch=False: validation scalars go to TensorBoard at their iteration (the
    # default puts them at runner.epoch, which an iteration loop leaves at 0)
    hooks["logger"] = dict(
        type="LoggerHook", interval=settings.log_interval, log_metric_by_epoch=False
    )
    hooks.pop("visualization", None)
    cfg["log_processor"] = dict(
        type="LogProcessor", window_size=settings.log_interval, by_epoch=False
    )
    if settings.seed is not None:
        cfg["randomness"] = dict(seed=settings.seed)
    cfg["env_cfg"] = dict(cfg.get("env_cfg", {}), dist_cfg=dict(backend="nccl"))


def _drop_pretrained(cfg: Any) -> None:
    """Turn off ImageNet weights (unreachable here): init_cfg=Pretrained anywhere in the model.

    A backbone trained from scratch must also learn its stem and BatchNorm statistics, so
    ``frozen_stages`` and ``norm_eval`` (which assume ImageNet weights) are turned off too.
    """
    backbone = cfg["model"].get("backbone", {})
    if "frozen_stages" in backbone:
        backbone["frozen_stages"] = -1
    if "norm_eval" in backbone:
        backbone["norm_eval"] = False

    drop_pretrained_init(cfg["model"])


def drop_pretrained_init(node: Any) -> None:
    """Set every ``init_cfg=dict(type='Pretrained', ...)`` below ``node`` to None, in place."""
    if isinstance(node, dict):
        init = node.get("init_cfg")
        if isinstance(init, Mapping) and init.get("type") == "Pretrained":
            node["init_cfg"] = None
        for value in node.values():
            drop_pretrained_init(value)
    elif isinstance(node, list):
        for value in node:
            drop_pretrained_init(value)


def _apply_image_scale(cfg: Any, scale: tuple[int, int]) -> None:
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        for step in _innermost_dataset(cfg[loader]["dataset"]).get("pipeline", []):
            if step.get("type") == "Resize":
                step["scale"] = tuple(scale)


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
