"""The built-in default dataset: a tiny, deterministic COCO-format set of simple shapes.

Each image is a textured background with 1-3 filled shapes. Shapes carry real COCO category ids
(with COCO's gaps) so that mmdet's stock 80-class configs and CocoMetric work unchanged:

    circle -> 37 "sports ball", square -> 72 "tv", triangle -> 13 "stop sign"

Every image has polygons and boxes; the first training and validation images also carry one
crowd region encoded as COCO RLE (``iscrowd=1``), which the detectors must ignore. Generation is
pure numpy/PIL seeded per image, so the bytes are identical on every machine; the directory is
written to a temp folder and renamed into place, so a half-written set never appears.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from common import atomic_dir

# Real COCO 2017 categories (id, name) used for the shapes. The full 80-category list is written
# to the JSON so class indices match the stock configs; only these three get annotations.
SHAPES = {"circle": (37, "sports ball"), "square": (72, "tv"), "triangle": (13, "stop sign")}
VERSION = "shapes-v1"
IMAGE_SIZE = 256
SPLITS = {"train": 48, "val": 16}
COLORS = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
]


@dataclass(frozen=True)
class ShapesSpec:
    """What the generator makes; identical specs give identical bytes."""

    seed: int = 0
    train_images: int = SPLITS["train"]
    val_images: int = SPLITS["val"]
    size: int = IMAGE_SIZE


def make_shapes_coco(root: Path, *, spec: ShapesSpec = ShapesSpec()) -> Path:
    """Generate the dataset under ``root`` (COCO 2017 layout) unless it is already complete."""
    root = Path(root)
    if (root / ".complete").exists():
        return root
    try:
        with atomic_dir(root) as tmp:
            (tmp / "annotations").mkdir(parents=True)
            for offset, (split, count) in enumerate(
                (("train", spec.train_images), ("val", spec.val_images))
            ):
                coco = _make_split(
                    tmp / f"{split}2017", count, spec=spec, seed=spec.seed * 1000 + offset
                )
                path = tmp / "annotations" / f"instances_{split}2017.json"
                path.write_text(json.dumps(coco))
            (tmp / ".complete").write_text(f"{VERSION} {spec}\n")
    except OSError:
        if not (root / ".complete").exists():  # lost a race to an identical writer: fine
            raise
    return root


def _make_split(image_dir: Path, count: int, *, spec: ShapesSpec, seed: int) -> dict:
    image_dir.mkdir(parents=True)
    images, annotations = [], []
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        image_id = seed * 10_000 + index + 1
        name = f"{image_id:012d}.jpg"
        picture, objects = _draw_image(rng, spec.size)
        picture.save(image_dir / name, quality=92)
        images.append({"id": image_id, "file_name": name, "width": spec.size, "height": spec.size})
        for category_id, polygon in objects:
            annotations.append(
                _polygon_annotation(len(annotations) + 1, image_id, category_id, polygon)
            )
        if index == 0:
            annotations.append(_crowd_annotation(len(annotations) + 1, image_id, spec.size))
    return {
        "info": {"description": f"mmdet-determined {VERSION}", "version": VERSION},
        "licenses": [
            {
                "id": 1,
                "name": "CC0 1.0",
                "url": "https://creativecommons.org/publicdomain/zero/1.0/",
            }
        ],
        "images": [dict(img, license=1) for img in images],
        "annotations": annotations,
        "categories": coco_categories(),
    }


def _draw_image(rng: np.random.Generator, size: int) -> tuple[Image.Image, list]:
    base = rng.integers(40, 200, size=3)
    noise = rng.normal(0, 18, size=(size, size, 1))
    gradient = np.linspace(-30, 30, size)[None, :, None] * rng.choice([-1, 1])
    pixels = np.clip(base[None, None, :] + noise + gradient, 0, 255).astype(np.uint8)
    picture = Image.fromarray(pixels)
    draw = ImageDraw.Draw(picture)
    objects = []
    for _ in range(int(rng.integers(1, 4))):
        shape = list(SHAPES)[int(rng.integers(len(SHAPES)))]
        radius = float(rng.uniform(size * 0.1, size * 0.22))
        cx, cy = (float(v) for v in rng.uniform(radius, size - radius, size=2))
        polygon = _shape_polygon(shape, cx, cy, radius, angle=float(rng.uniform(0, 2 * math.pi)))
        color = COLORS[int(rng.integers(len(COLORS)))]
        draw.polygon([tuple(p) for p in polygon], fill=color, outline=(255, 255, 255))
        objects.append((SHAPES[shape][0], polygon))
    return picture, objects


def _shape_polygon(shape: str, cx: float, cy: float, r: float, *, angle: float) -> list:
    corners = {"circle": 24, "square": 4, "triangle": 3}[shape]
    if shape == "circle":
        angle = 0.0
    return [
        [
            round(cx + r * math.cos(angle + 2 * math.pi * k / corners), 2),
            round(cy + r * math.sin(angle + 2 * math.pi * k / corners), 2),
        ]
        for k in range(corners)
    ]


def _polygon_annotation(ann_id: int, image_id: int, category_id: int, polygon: list) -> dict:
    xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
    flat = [v for p in polygon for v in p]
    area = 0.5 * abs(
        sum(
            x0 * y1 - x1 * y0
            for (x0, y0), (x1, y1) in zip(polygon, polygon[1:] + polygon[:1], strict=True)
        )
    )
    bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "iscrowd": 0,
        "segmentation": [flat],
        "area": round(area, 2),
        "bbox": [round(v, 2) for v in bbox],
    }


def _crowd_annotation(ann_id: int, image_id: int, size: int) -> dict:
    """A crowd region (iscrowd=1) in COCO's uncompressed RLE, as real COCO stores crowds."""
    from pycocotools import mask as mask_utils

    mask = np.zeros((size, size), dtype=np.uint8, order="F")
    mask[size - 24 : size - 4, 4:60] = 1
    rle = mask_utils.encode(mask)
    counts, run, value = [], 0, 0
    for pixel in mask.flatten(order="F"):  # uncompressed counts: alternating runs of 0s and 1s
        if pixel == value:
            run += 1
        else:
            counts.append(run)
            run, value = 1, pixel
    counts.append(run)
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": SHAPES["circle"][0],
        "iscrowd": 1,
        "segmentation": {"counts": counts, "size": [size, size]},
        "area": float(mask_utils.area(rle)),
        "bbox": [x, y, w, h],
    }


def coco_categories() -> list[dict]:
    """The 80 COCO 2017 categories with their real ids (1..90 with gaps)."""
    from mmdet.datasets import CocoDataset

    ids = [i for i in range(1, 91) if i not in COCO_ID_GAPS]
    names = CocoDataset.METAINFO["classes"]
    return [
        {"id": cid, "name": name, "supercategory": "object"}
        for cid, name in zip(ids, names, strict=True)
    ]


# The ids COCO 2017 never assigned.
COCO_ID_GAPS = frozenset({12, 26, 29, 30, 45, 66, 68, 69, 71, 83})
