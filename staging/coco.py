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
JPEG_END = b"\xff\xd9"  # EOI; 0xFF inside the scan data is always stuffed (FF 00), so it is unique
PNG_END = b"IEND\xaeB`\x82"
TAIL_BYTES = 64  # some writers pad after EOI


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


def check_coco_file(path: Path, *, label: str) -> dict:
    """Parse and validate one staged annotation file (runs on the temp file before rename);
    returns the parsed document."""
    doc = load_json(path, label=label)
    validate_coco(doc, label=label)
    return doc


def require_annotations(doc: dict, *, label: str, why: str) -> None:
    """CorruptDataError unless ``doc`` has at least one non-crowd annotation (``why`` says what
    needs them: training has nothing to learn from, evaluation no ground truth)."""
    if not any(not a.get("iscrowd") for a in doc["annotations"]):
        raise CorruptDataError(
            f"{label} has no (non-crowd) annotations: {why}; point at an annotated COCO split"
        )


def check_images(doc: dict, folder: Path, *, label: str) -> None:
    """Every image ``doc`` lists is in ``folder`` and not cut short: a JPEG ends with its EOI
    marker, a PNG with its IEND chunk (what a partial copy or download lacks). Reads the last
    bytes of each file only. CorruptDataError naming the first files and how many there are."""
    bad: dict[str, list[str]] = {"missing": [], "truncated": []}
    for name in image_files(doc):
        problem = _image_problem(Path(folder) / name)
        if problem:
            bad[problem].append(name)
    for problem, names in bad.items():
        if names:
            shown = ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
            fix = "copy them in" if problem == "missing" else "re-download them"
            raise CorruptDataError(
                f"{len(names)} of {len(doc['images'])} images listed in {label} are {problem} "
                f"in {folder}: {shown}; {fix} or fix the annotation file"
            )


def _image_problem(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - TAIL_BYTES))
            tail = f.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return "missing"
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg") and JPEG_END not in tail:
        return "truncated"
    if suffix == ".png" and not tail.endswith(PNG_END):
        return "truncated"
    return None


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
