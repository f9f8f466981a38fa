"""COCO specifics: which files a split needs, validation of staged JSON, deterministic subsets."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from errors import CorruptDataError
from staging.paths import check_relpath

ARCHIVE = "annotations/annotations_trainval2017.zip"
SPLITS_IN_ARCHIVE = ("train", "val")
REQUIRED_KEYS = ("images", "annotations", "categories")


def ann_relpath(split: str) -> str:
    """``annotations/instances_<split>2017.json`` (also the member name inside the archive)."""
    return f"annotations/instances_{split}2017.json"


def image_dir(split: str) -> str:
    return f"{split}2017"


def load_json(path: Path, *, label: str) -> Any:
    """Parse JSON; CorruptDataError naming ``label`` and the position of the first error."""
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except UnicodeDecodeError as err:
        raise CorruptDataError(f"{label} is not UTF-8 JSON ({err.reason}); re-export it") from err
    except json.JSONDecodeError as err:
        raise CorruptDataError(
            f"{label} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}; "
            "fix or re-download the file"
        ) from err


def validate_coco(doc: Any, *, label: str) -> None:
    """Check COCO structure; the error names ``label`` and the first bad record."""
    if not isinstance(doc, dict):
        raise CorruptDataError(f"{label}: top level must be an object with {REQUIRED_KEYS}")
    for key in REQUIRED_KEYS:
        if not isinstance(doc.get(key), list):
            raise CorruptDataError(f"{label}: missing or non-list '{key}'; not a COCO file")
    image_ids = set()
    for i, img in enumerate(doc["images"]):
        if (
            not isinstance(img, dict)
            or "id" not in img
            or not isinstance(img.get("file_name"), str)
        ):
            raise CorruptDataError(f"{label}: images[{i}] needs 'id' and 'file_name': {img!r:.120}")
        check_relpath(img["file_name"], what=f"{label} images[{i}].file_name")
        image_ids.add(img["id"])
    cat_ids = {c.get("id") for c in doc["categories"] if isinstance(c, dict)}
    for i, ann in enumerate(doc["annotations"]):
        if not isinstance(ann, dict) or ann.get("image_id") not in image_ids:
            ref = ann.get("image_id") if isinstance(ann, dict) else ann
            aid = ann.get("id") if isinstance(ann, dict) else None
            raise CorruptDataError(
                f"{label}: annotations[{i}] (id={aid}) names image_id={ref!r}, which is not in "
                "'images'; fix the annotation file"
            )
        if ann.get("category_id") not in cat_ids:
            raise CorruptDataError(
                f"{label}: annotations[{i}] (id={ann.get('id')}) names category_id="
                f"{ann.get('category_id')!r}, which is not in 'categories'; fix the file"
            )


def check_coco_file(path: Path, *, label: str) -> None:
    """Parse and validate one staged annotation file (runs on the temp file before rename)."""
    validate_coco(load_json(path, label=label), label=label)


def subset_doc(doc: dict, n: int, *, seed: int) -> dict:
    """A valid COCO subset: ``n`` images chosen by ``seed``, their annotations (crowd included),
    all categories, info and licenses kept. Pure; the input is not modified."""
    ids = sorted(img["id"] for img in doc["images"])
    chosen = set(random.Random(seed).sample(ids, min(n, len(ids))))
    out = {k: v for k, v in doc.items() if k not in ("images", "annotations")}
    out["images"] = [img for img in doc["images"] if img["id"] in chosen]
    out["annotations"] = [a for a in doc["annotations"] if a["image_id"] in chosen]
    return out


def image_files(doc: dict) -> list[str]:
    """The ``file_name`` of every image in a COCO document, in file order."""
    return [img["file_name"] for img in doc["images"]]
