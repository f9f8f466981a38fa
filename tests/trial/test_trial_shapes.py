"""The built-in shapes set: deterministic, COCO-valid, with polygons, a crowd RLE and category gaps."""

from __future__ import annotations

import hashlib
import json

from pycocotools.coco import COCO

from trial.runtime.shapes import COCO_ID_GAPS, SHAPES, ShapesSpec, make_shapes_coco


def digest(root):
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_generation_is_byte_identical_and_atomic(tmp_path):
    spec = ShapesSpec(train_images=4, val_images=2)
    a = make_shapes_coco(tmp_path / "a", spec=spec)
    b = make_shapes_coco(tmp_path / "b", spec=spec)
    assert digest(a) == digest(b)
    assert not list(tmp_path.glob("*.incomplete"))
    other = make_shapes_coco(tmp_path / "c", spec=ShapesSpec(seed=1, train_images=4, val_images=2))
    assert digest(other) != digest(a)


def test_existing_complete_set_is_reused(tmp_path):
    root = make_shapes_coco(tmp_path / "s", spec=ShapesSpec(train_images=2, val_images=1))
    marker = (root / ".complete").stat().st_mtime_ns
    make_shapes_coco(root, spec=ShapesSpec(train_images=2, val_images=1))
    assert (root / ".complete").stat().st_mtime_ns == marker


def test_default_set_is_valid_coco_with_crowd_polygons_and_gaps(shapes_root):
    for split in ("train", "val"):
        path = shapes_root / "annotations" / f"instances_{split}2017.json"
        coco = COCO(str(path))
        raw = json.loads(path.read_text())
        ids = {c["id"] for c in raw["categories"]}
        assert len(ids) == 80 and not ids & COCO_ID_GAPS and max(ids) == 90
        used = {a["category_id"] for a in raw["annotations"] if not a["iscrowd"]}
        assert used == {cid for cid, _ in SHAPES.values()}
        crowd = [a for a in raw["annotations"] if a["iscrowd"]]
        assert len(crowd) == 1 and isinstance(crowd[0]["segmentation"]["counts"], list)
        assert coco.annToMask(coco.loadAnns(crowd[0]["id"])[0]).sum() == crowd[0]["area"]
        polygons = [a for a in raw["annotations"] if not a["iscrowd"]]
        assert all(
            isinstance(a["segmentation"], list) and len(a["segmentation"][0]) >= 6 for a in polygons
        )
        for img in raw["images"]:
            assert (shapes_root / f"{split}2017" / img["file_name"]).is_file()
