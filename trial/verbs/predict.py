"""``invoke predict MODEL IMAGES --out DIR``: detections drawn on images, and as COCO results.

For every image: ``<out>/<name>.png`` with boxes (and masks) and class names drawn by mmdet's
DetLocalVisualizer. For all of them: ``<out>/results.json`` in COCO results format (``image_id``,
``category_id``, ``bbox`` [x, y, w, h], ``score``, and ``segmentation`` as RLE for mask models) and
``<out>/images.json``, a COCO header (images + categories) so that
``COCO('images.json').loadRes('results.json')`` works. Everything is written to a temp directory
first: an image that cannot be decoded stops the run with nothing in ``--out``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import quiet_prints
from errors import ConfigError
from trial.verbs import artifact
from trial.verbs.export import pick_device, resolve_model
from trial.verbs.outdir import atomic_dir, check_new_dir

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
RESULTS_FILE = "results.json"
IMAGES_FILE = "images.json"


def predict_images(
    model: str,
    inputs: Sequence[str],
    out: str | Path,
    *,
    score_thr: float = 0.3,
    master: str | None = None,
    device: str | None = None,
) -> dict:
    """Predict every image of ``inputs`` (files or directories); returns a small summary."""
    check_new_dir(out)
    paths = image_paths(inputs)
    if not 0.0 <= score_thr <= 1.0:
        raise ConfigError(f"--score-thr {score_thr} must be between 0 and 1")
    device = pick_device(device)  # before a model is exported or loaded
    with resolve_model(model, master=master) as export_dir, atomic_dir(out) as tmp:
        detections = _predict(export_dir, paths, tmp, score_thr=score_thr, device=device)
    return {"images": len(paths), "detections": detections, "out": str(Path(out).resolve())}


def image_paths(inputs: Sequence[str]) -> list[Path]:
    """Image files in order: each file as given, each directory's images sorted by name."""
    if not inputs:
        raise ConfigError("no images given; pass image files or directories")
    paths: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ConfigError(
                    f"image directory {path} holds no {'/'.join(IMAGE_SUFFIXES)} files"
                )
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise ConfigError(f"image {path} does not exist; pass image files or directories")
    return paths


def output_names(paths: Sequence[Path]) -> list[str]:
    """``<stem>.png`` per image, made unique (``a.png``, ``a-2.png``) when stems repeat."""
    names, seen = [], {}
    for path in paths:
        count = seen[path.stem] = seen.get(path.stem, 0) + 1
        names.append(f"{path.stem}.png" if count == 1 else f"{path.stem}-{count}.png")
    return names


def _predict(
    export_dir: Path, paths: Sequence[Path], tmp: Path, *, score_thr: float, device: str
) -> int:
    from mmdet.apis import inference_detector, init_detector
    from tqdm import tqdm

    with quiet_prints():  # mmengine's "Loads checkpoint by local backend from path: ..."
        model = init_detector(
            str(export_dir / artifact.CONFIG_FILE),
            str(export_dir / artifact.WEIGHTS_FILE),
            device=device,
        )
    categories = _categories(export_dir, model.dataset_meta["classes"])
    visualizer = _visualizer(model.dataset_meta)
    images, results = [], []
    names = output_names(paths)
    for image_id, (path, name) in enumerate(
        tqdm(list(zip(paths, names, strict=True)), desc="predict", unit="img", disable=None),
        start=1,
    ):
        image = _read_image(path)
        sample = inference_detector(model, image)
        keep = sample.pred_instances[sample.pred_instances.scores >= score_thr]
        sample.pred_instances = keep
        visualizer.add_datasample(
            name, image[..., ::-1], data_sample=sample, draw_gt=False,
            pred_score_thr=score_thr, out_file=str(tmp / name),
        )  # fmt: skip
        height, width = image.shape[:2]
        images.append({"id": image_id, "file_name": str(path), "height": height, "width": width})
        results.extend(coco_results(keep, image_id=image_id, categories=categories))
    (tmp / RESULTS_FILE).write_text(json.dumps(results) + "\n")
    header = {"images": images, "categories": categories, "annotations": []}
    (tmp / IMAGES_FILE).write_text(json.dumps(header) + "\n")
    return len(results)


def coco_results(instances: Any, *, image_id: int, categories: Sequence[dict]) -> list[dict]:
    """mmdet ``pred_instances`` -> COCO results entries (xywh boxes, RLE masks)."""
    bboxes = instances.bboxes.tolist()
    scores = instances.scores.tolist()
    labels = instances.labels.tolist()
    masks = _rles(instances.masks) if "masks" in instances else None
    entries = []
    for i, ((x1, y1, x2, y2), score, label) in enumerate(zip(bboxes, scores, labels, strict=True)):
        entry = {
            "image_id": image_id,
            "category_id": categories[label]["id"],
            "bbox": [round(v, 2) for v in (x1, y1, x2 - x1, y2 - y1)],
            "score": round(float(score), 5),
        }
        if masks is not None:
            entry["segmentation"] = masks[i]
        entries.append(entry)
    return entries


def _rles(masks: Any) -> list[dict]:
    import numpy as np
    from pycocotools import mask as mask_utils

    array = np.asfortranarray(masks.cpu().numpy().astype(np.uint8).transpose(1, 2, 0))
    rles = mask_utils.encode(array) if array.shape[2] else []
    return [{"size": r["size"], "counts": r["counts"].decode("ascii")} for r in rles]


def _read_image(path: Path) -> Any:
    import cv2
    import mmcv

    try:
        image = mmcv.imread(str(path))  # BGR, as mmdet's LoadImageFromFile reads it
    except (OSError, ValueError, cv2.error) as err:
        raise ConfigError(
            f"image {path} cannot be read ({type(err).__name__}); pass image files"
        ) from err
    if image is None:
        raise ConfigError(f"image {path} cannot be decoded; pass JPEG/PNG/... image files")
    return image


def _categories(export_dir: Path, classes: Sequence[str]) -> list[dict]:
    info = export_dir / artifact.INFO_FILE
    if info.is_file():
        return json.loads(info.read_text())["categories"]
    return artifact.categories_for(classes, None)


def _visualizer(dataset_meta: dict) -> Any:
    import uuid

    from mmdet.visualization import DetLocalVisualizer

    visualizer = DetLocalVisualizer(name=f"predict-{uuid.uuid4().hex[:8]}")
    visualizer.dataset_meta = dataset_meta
    return visualizer
