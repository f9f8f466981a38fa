"""Staging from a local directory: warm runs, the dest view, archives, subsets, dry-run, verify."""

from __future__ import annotations

import json
import os
import shutil
import zipfile

import pytest
from staging_helpers import incomplete_files, run_staging, snapshot, write_coco

from errors import StagingError
from staging import DataSpec, stage_coco
from staging.view import VIEW_MARKER


def _spec(src, tmp_path, **kw) -> DataSpec:
    data = {"source": str(src), "cache": str(tmp_path / "cache"), "dest": str(tmp_path / "dest")}
    return DataSpec.from_dict({**data, **kw})


def test_stage_twice_second_run_is_metadata_only(tmp_path, coco_sample):
    spec = _spec(coco_sample, tmp_path)
    cold = stage_coco(spec)
    assert (cold.files, cold.downloads, cold.cache_hits) == (2, 2, 0)
    warm = stage_coco(spec)
    assert (warm.downloads, warm.cache_hits) == (0, 2)
    assert warm.summary().endswith("0 downloaded, 2 cache hits")
    ann = spec.ann_file("train")
    assert (
        ann.read_bytes() == (coco_sample / "annotations" / "instances_train2017.json").read_bytes()
    )
    assert (ann.stat().st_nlink >= 2 and not os.access(ann, os.W_OK)) or os.geteuid() == 0
    assert oct(ann.stat().st_mode & 0o777) == "0o444"
    # no --with-images from disk: the view links the source's image folders
    assert spec.image_prefix("val") == f"{tmp_path / 'dest'}/val2017/"
    assert sorted(os.listdir(tmp_path / "dest" / "val2017")) == sorted(
        os.listdir(coco_sample / "val2017")
    )
    manifest = json.loads(warm.manifest.read_text())
    assert {o["kind"] for o in manifest["objects"]} == {"annotation"}
    assert all(len(o["crc32c"]) == 8 for o in manifest["objects"])


def test_with_images_subset_stages_only_chosen_images(tmp_path, coco_sample):
    spec = _spec(coco_sample, tmp_path, with_images=True, subset=5, seed=3)
    result = stage_coco(spec)
    doc = json.loads(spec.ann_file("train").read_text())
    assert len(doc["images"]) == 5 and len(doc["categories"]) == 80
    names = sorted(i["file_name"] for i in doc["images"])
    assert sorted(os.listdir(tmp_path / "dest" / "train2017")) == names
    assert VIEW_MARKER in os.listdir(tmp_path / "dest")  # the whole view is staging's
    assert result.files == 2 + 10 and result.downloads == 12
    again = stage_coco(_spec(coco_sample, tmp_path, with_images=True, subset=5, seed=3))
    assert again.downloads == 0 and json.loads(spec.ann_file("train").read_text()) == doc
    # switching the same dest back to a folder link replaces staging's own per-file view
    stage_coco(_spec(coco_sample, tmp_path))
    assert (tmp_path / "dest" / "train2017").is_symlink()


def test_archive_source_extracts_once_atomically(tmp_path, coco_sample):
    src = tmp_path / "src"
    (src / "annotations").mkdir(parents=True)
    with zipfile.ZipFile(src / "annotations" / "annotations_trainval2017.zip", "w") as zf:
        for split in ("train", "val"):
            name = f"annotations/instances_{split}2017.json"
            zf.write(coco_sample / name, name)
    for split in ("train2017", "val2017"):  # copies: a link out of the source is refused
        shutil.copytree(coco_sample / split, src / split)
    spec = _spec(src, tmp_path)
    first = stage_coco(spec)
    assert first.downloads == 1  # the zip
    for split in ("train", "val"):
        staged = spec.ann_file(split).read_bytes()
        assert staged == (coco_sample / f"annotations/instances_{split}2017.json").read_bytes()
    completes = list((tmp_path / "cache").rglob(".complete"))
    assert len(completes) == 1 and incomplete_files(tmp_path / "cache") == []
    assert stage_coco(spec).downloads == 0


def test_dry_run_writes_nothing(tmp_path, coco_sample):
    done = run_staging("--source", str(coco_sample), "--cache", str(tmp_path / "cache"),
                       "--dest", str(tmp_path / "dest"), "--with-images", "--dry-run")  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    total = 2 + len(list(coco_sample.glob("*2017/*.jpg")))  # annotations + images
    assert sum(line.startswith("fetch ") for line in lines) == total
    assert f"{total} objects, 0 cached, {total} to fetch" in done.stdout
    assert not (tmp_path / "cache").exists() and not (tmp_path / "dest").exists()


def test_source_change_gets_a_new_cache_entry(tmp_path):
    src = write_coco(tmp_path / "src", splits=("val",))
    spec = _spec(src, tmp_path, splits=["val"])
    stage_coco(spec)
    path = src / "annotations" / "instances_val2017.json"
    doc = json.loads(path.read_text())
    doc["categories"].append({"id": 2, "name": "b"})
    path.write_text(json.dumps(doc))
    assert stage_coco(spec).downloads == 1
    assert json.loads(spec.ann_file("val").read_text()) == doc


def test_verify_rehashes_and_repairs(tmp_path, coco_sample):
    stage_coco(_spec(coco_sample, tmp_path))
    before = snapshot(tmp_path / "cache")
    assert stage_coco(_spec(coco_sample, tmp_path, verify=True)).downloads == 0
    cached = next(p for p in (tmp_path / "cache").rglob("*-instances_val2017.json"))
    cached.chmod(0o644)
    cached.write_bytes(cached.read_bytes().replace(b"person", b"PERSON", 1))
    assert stage_coco(_spec(coco_sample, tmp_path, verify=True)).downloads == 1
    assert snapshot(tmp_path / "cache") == before


def test_missing_image_folder_is_reported(tmp_path):
    src = write_coco(tmp_path / "src", splits=("val",))
    (src / "val2017" / "000000000001.jpg").unlink()
    for p in (src / "val2017").iterdir():
        p.unlink()
    (src / "val2017").rmdir()
    with pytest.raises(StagingError, match=r"missing image folder .*val2017/"):
        stage_coco(_spec(src, tmp_path, splits=["val"]))


def test_archive_with_a_dotdot_member_is_refused(tmp_path, coco_sample):
    src = tmp_path / "src"
    (src / "annotations").mkdir(parents=True)
    with zipfile.ZipFile(src / "annotations" / "annotations_trainval2017.zip", "w") as zf:
        zf.write(
            coco_sample / "annotations/instances_val2017.json", "annotations/instances_val2017.json"
        )
        zf.writestr("../../evil.json", "{}")
    shutil.copytree(coco_sample / "val2017", src / "val2017")
    with pytest.raises(StagingError, match=r"unsafe object name '\.\./\.\./evil\.json'"):
        stage_coco(_spec(src, tmp_path, splits=["val"]))
    assert not list((tmp_path / "cache").rglob(".complete"))
    assert not list((tmp_path / "cache").rglob("*evil*"))
    assert incomplete_files(tmp_path) == []
    assert not (tmp_path / "dest").exists()
