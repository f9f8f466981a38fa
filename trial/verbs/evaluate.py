"""``invoke eval MODEL --data DIR [--split val]``: COCO mAP of an export (or any export SOURCE).

The loop is the trial's validation, step for step: the export's test dataset on the COCO split,
``model.test_step`` per image (what mmengine's ValLoop calls), and the trial's COCO metric (mmdet's
CocoMetric, reporting 0.0 instead of nothing when there are no detections). CocoMetric prints its
table; the metrics are written as JSON.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from common import atomic_file, quiet_prints
from errors import ConfigError
from trial.verbs import artifact
from trial.verbs.export import pick_device, resolve_model
from trial.verbs.options import file_option


def evaluate_model(
    model: str,
    data: str,
    *,
    split: str = artifact.DEFAULT_SPLIT,
    out: str | None = None,
    master: str | None = None,
    device: str | None = None,
) -> dict:
    """Evaluate MODEL on ``data``'s split; writes and returns ``{..., "metrics": {...}}``."""
    ann, images = coco_split(data, split)
    out_path = file_option(out or f"eval_{split}.json", "--out")
    if out_path.exists():  # like export and predict: never overwrite a result
        raise ConfigError(f"--out {out_path} already exists; pick a new file or delete it first")
    device = pick_device(device)
    with resolve_model(model, master=master) as export_dir:
        metrics, count = _evaluate(export_dir, ann, images, device=device)
        checkpoint = _checkpoint_of(export_dir) or model
    result = {
        "model": model,
        "checkpoint": checkpoint,
        "data": str(Path(data).expanduser().resolve()),
        "split": split,
        "images": count,
        "metrics": metrics,
    }
    _write_json(out_path, result)
    return result


def coco_split(data: str, split: str) -> tuple[Path, Path]:
    """``annotations/instances_<split>2017.json`` and ``<split>2017/`` of a COCO-layout ``data``."""
    from staging.coco import check_coco_file, check_images, require_annotations

    root = Path(data).expanduser().resolve()
    ann = root / "annotations" / f"instances_{split}2017.json"
    images = root / f"{split}2017"
    if not ann.is_file() or not images.is_dir():
        missing = ann if not ann.is_file() else images
        raise ConfigError(
            f"--data {root} is not a COCO-layout directory for --split {split}: missing "
            f"{missing.relative_to(root) if missing.is_relative_to(root) else missing}; expected "
            f"annotations/instances_{split}2017.json and {split}2017/"
        )
    doc = check_coco_file(ann, label=str(ann))
    require_annotations(
        doc, label=f"--split {split} ({ann})", why="there is no mAP without ground truth (invoke "
        "predict draws detections without it)",
    )  # fmt: skip
    check_images(doc, images, label=str(ann))
    return ann, images


def _checkpoint_of(export_dir: Path) -> str | None:
    """The training checkpoint an export was made from (its export.json), when recorded."""
    try:
        info = json.loads((export_dir / artifact.INFO_FILE).read_text())
        return str(info["source"]["checkpoint"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _evaluate(export_dir: Path, ann: Path, images: Path, *, device: str) -> tuple[dict, int]:
    import torch
    from mmdet.apis import init_detector
    from mmdet.registry import DATASETS
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.evaluator import Evaluator
    from tqdm import tqdm

    import trial.engine.metrics  # noqa: F401  (registers ZeroSafeCocoMetric, the trial's metric)
    from trial.engine.hook import to_det_metrics

    cfg = Config.fromfile(str(export_dir / artifact.CONFIG_FILE))
    dataset_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
    dataset_cfg.update(data_root="", ann_file=str(ann), data_prefix=dict(img=f"{images}/"))
    with quiet_prints():  # "Loads checkpoint by ...", pycocotools' "loading annotations ..."
        model = init_detector(cfg, str(export_dir / artifact.WEIGHTS_FILE), device=device)
        dataset = DATASETS.build(dataset_cfg)
        evaluator = Evaluator(_trial_metric(cfg.test_evaluator, ann))
    evaluator.dataset_meta = dataset.metainfo
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=1, shuffle=False, collate_fn=pseudo_collate, num_workers=0
    )
    with torch.no_grad():
        for batch in tqdm(loader, desc="eval", unit="img", disable=None):
            evaluator.process(data_samples=model.test_step(batch), data_batch=batch)
    return to_det_metrics(evaluator.evaluate(len(dataset))), len(dataset)


def _trial_metric(evaluator_cfg: dict, ann: Path) -> dict:
    metric = dict(copy.deepcopy(evaluator_cfg), ann_file=str(ann), backend_args=None)
    if metric.get("type") == "CocoMetric":
        metric["type"] = "ZeroSafeCocoMetric"
    return metric


def _write_json(path: Path, doc: dict) -> None:
    with atomic_file(path) as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
