"""`--data DIR`: COCO-shaped directories are accepted; anything else is one clear error."""

from __future__ import annotations

import json
import shutil

import pytest

from errors import ProjectError
from trial.runtime.data import coco_dir_paths


def test_the_coco_sample_layout_is_accepted(coco_sample):
    paths = coco_dir_paths(coco_sample)
    assert paths.train_ann.endswith("annotations/instances_train2017.json")
    assert paths.val_images.endswith("val2017/")


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("no-dir", "is not a directory"),
        ("no-annotations", "missing annotations/instances_train2017.json"),
        ("no-images", "missing image folder val2017/"),
        ("bad-json", "is not valid JSON"),
        ("dangling-image-id", "names image_id=999999, which is not in 'images'"),
    ],
)
def test_not_coco_shaped_is_one_clear_error(tmp_path, shapes_root, breakage, message):
    root = tmp_path / "coco"
    shutil.copytree(shapes_root, root)
    ann = root / "annotations" / "instances_train2017.json"
    if breakage == "no-dir":
        root = tmp_path / "missing"
    elif breakage == "no-annotations":
        ann.unlink()
    elif breakage == "no-images":
        shutil.rmtree(root / "val2017")
    elif breakage == "bad-json":
        ann.write_text('{"images": [')
    else:
        doc = json.loads(ann.read_text())
        doc["annotations"][0]["image_id"] = 999999
        ann.write_text(json.dumps(doc))
    with pytest.raises(ProjectError, match=message) as info:
        coco_dir_paths(root)
    assert "\n" not in str(info.value)
