"""Pure planners and parsers: table-driven, no I/O."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from errors import ConfigError, CorruptDataError, StagingError
from staging.coco import check_images, image_files, load_json, subset_doc, validate_coco
from staging.paths import GS, LOCAL, check_relpath, object_path, parse_source, safe_join
from staging.plan import ANNOTATION, ARCHIVE_KIND, IMAGE, plan_annotations, plan_images
from staging.spec import DataSpec, load_data_section
from staging.stores.sources import ObjectInfo


@pytest.mark.parametrize(
    ("url", "kind", "bucket", "prefix"),
    [
        ("gs://b/coco2017", GS, "b", "coco2017"),
        ("gs://b/a/b/", GS, "b", "a/b"),
        ("gs://b", GS, "b", ""),
        ("/data/coco", LOCAL, "", ""),
    ],
)
def test_parse_source(url, kind, bucket, prefix):
    ref = parse_source(url)
    assert (ref.kind, ref.bucket, ref.prefix) == (kind, bucket, prefix)


@pytest.mark.parametrize("url", ["", "gs://", "s3://", "az://b/x", "gs:///x"])
def test_parse_source_rejects(url):
    with pytest.raises(ConfigError, match=r"data\.source"):
        parse_source(url)


@pytest.mark.parametrize("name", ["a/../b", "../x", "/abs", "a//b", "a/./b", "", "a\\b"])
def test_check_relpath_rejects(name):
    with pytest.raises(StagingError, match="unsafe object name"):
        check_relpath(name, what="test")


def test_safe_join_stays_under_root(tmp_path):
    assert safe_join(tmp_path, "a/b.json", what="t") == tmp_path / "a" / "b.json"
    with pytest.raises(StagingError):
        safe_join(tmp_path, "a/../../etc/passwd", what="t")


def test_object_path_is_keyed_by_url_and_identity(tmp_path):
    a = object_path(tmp_path, "gs://b/p/x.json", "generation=1,crc32c=A")
    assert a == object_path(tmp_path, "gs://b/p/x.json", "generation=1,crc32c=A")
    assert a != object_path(tmp_path, "gs://b/p/x.json", "generation=2,crc32c=A")
    assert a != object_path(tmp_path, "gs://b/q/x.json", "generation=1,crc32c=A")
    assert a.name.endswith("-x.json") and tmp_path in a.parents


def _info(rel: str, size: int = 10) -> ObjectInfo:
    return ObjectInfo(rel, f"gs://b/p/{rel}", size, f"generation=1,crc32c={rel}")


def test_plan_annotations_prefers_json_then_archive(tmp_path):
    ref = parse_source("gs://b/p")
    both = [
        _info("annotations/instances_train2017.json"),
        _info("annotations/instances_val2017.json"),
    ]
    plan = plan_annotations(ref, both, ["train", "val"], cache_root=tmp_path)
    assert [(t.kind, t.split) for t in plan] == [(ANNOTATION, "train"), (ANNOTATION, "val")]
    zipped = [_info("annotations/annotations_trainval2017.zip")]
    plan = plan_annotations(ref, zipped, ["train"], cache_root=tmp_path)
    assert [t.kind for t in plan] == [ARCHIVE_KIND]
    with pytest.raises(StagingError, match="missing object gs://b/p/annotations/instances_val2017"):
        plan_annotations(ref, both[:1], ["train", "val"], cache_root=tmp_path)


def test_plan_images_subset_and_missing(tmp_path):
    ref = parse_source("gs://b/p")
    listing = [_info("train2017/1.jpg"), _info("train2017/2.jpg")]
    plan = plan_images(ref, listing, "train", cache_root=tmp_path)
    assert [t.info.relpath for t in plan] == ["train2017/1.jpg", "train2017/2.jpg"]
    assert {t.kind for t in plan} == {IMAGE}
    plan = plan_images(ref, listing, "train", cache_root=tmp_path, wanted=["2.jpg"])
    assert [t.info.relpath for t in plan] == ["train2017/2.jpg"]
    with pytest.raises(StagingError, match=r"3\.jpg"):
        plan_images(ref, listing, "train", cache_root=tmp_path, wanted=["3.jpg"])


GOOD = {"source": "gs://b/coco", "cache": "/c", "dest": "/d"}


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"source": ""}, "data.source"),
        ({"cache": None}, "data.cache"),
        ({"splits": ["train", "test"]}, "data.splits"),
        ({"subset": 0}, "data.subset"),
        ({"workers": 0}, "data.workers"),
        ({"with_images": "yes"}, "data.with_images"),
        ({"typo": 1}, "data.typo"),
        ({"source": "az://x/y"}, "data.source"),
    ],
)
def test_data_spec_names_the_bad_field(patch, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        DataSpec.from_dict({**GOOD, **patch})


def test_data_spec_paths_for_gs_and_local():
    gs = DataSpec.from_dict(GOOD)
    assert gs.ann_file("val") == Path("/d/annotations/instances_val2017.json")
    assert gs.image_prefix("train") == "gs://b/coco/train2017/"
    index = gs.backend_args()["index"]  # the image generations pinned when staging ran
    assert gs.backend_args() == {"backend": "gs_cached", "cache": "/c", "index": index}
    assert index == str(gs.index()) and index.startswith("/c/manifests/")
    staged = DataSpec.from_dict({**GOOD, "with_images": True})
    assert staged.image_prefix("train") == "/d/train2017/" and staged.backend_args() is None
    local = DataSpec.from_dict({**GOOD, "source": "/data/coco", "splits": "val"})
    assert local.splits == ("val",) and local.backend_args() is None
    assert DataSpec.from_dict(gs.to_dict()) == gs


def test_load_data_section_from_yaml_and_trial_info(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("name: x\ndata:\n  source: /s\n  cache: /c\n  dest: /d\n")
    assert load_data_section(str(exp))["source"] == "/s"
    info = tmp_path / "trial.json"  # the shape of /run/determined/info/trial.json
    info.write_text(json.dumps({"trial_id": 1, "config": {"data": {"source": "gs://b/x"}}}))
    assert load_data_section(str(info)) == {"source": "gs://b/x"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml is not valid YAML"):
        load_data_section(str(bad))


def _doc():
    images = [{"id": i, "file_name": f"{i}.jpg"} for i in range(1, 11)]
    anns = [{"id": 100 + i, "image_id": i, "category_id": 1 + i % 2, "iscrowd": int(i == 3)}
            for i in range(1, 11)]  # fmt: skip
    return {"info": {}, "images": images, "annotations": anns,
            "categories": [{"id": 1}, {"id": 2}, {"id": 90}]}  # fmt: skip


def test_subset_is_deterministic_valid_and_keeps_categories_and_crowd():
    doc = _doc()
    a, b = subset_doc(doc, 4, seed=0), subset_doc(doc, 4, seed=0)
    assert a == b and len(a["images"]) == 4
    assert subset_doc(doc, 4, seed=1)["images"] != a["images"]
    assert a["categories"] == doc["categories"] and "info" in a
    kept = {img["id"] for img in a["images"]}
    assert {x["image_id"] for x in a["annotations"]} == kept
    validate_coco(a, label="subset")
    with_crowd = next(
        s for s in range(50) if 3 in {i["id"] for i in subset_doc(doc, 2, seed=s)["images"]}
    )
    crowd = subset_doc(doc, 2, seed=with_crowd)["annotations"]
    assert any(x["iscrowd"] for x in crowd)
    assert len(doc["images"]) == 10  # input untouched


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("categories"), "missing or non-list 'categories'"),
        (
            lambda d: d["annotations"][4].update(image_id=999),
            r"annotations\[4\] \(id=105\) names image_id=999",
        ),
        (lambda d: d["annotations"][0].update(category_id=7), r"annotations\[0\].*category_id=7"),
        (lambda d: d["images"][1].update(file_name="../x.jpg"), "unsafe object name"),
    ],
)
def test_validate_coco_names_the_first_bad_record(mutate, message):
    doc = _doc()
    mutate(doc)
    with pytest.raises((CorruptDataError, StagingError), match=message):
        validate_coco(doc, label="instances_x.json")


def test_lock_files_are_bounded_stripes(tmp_path):
    from staging.paths import LOCK_STRIPES, lock_path

    paths = {lock_path(tmp_path, tmp_path / f"objects/x/{i}.jpg") for i in range(20_000)}
    assert len(paths) <= LOCK_STRIPES
    assert lock_path(tmp_path, tmp_path / "a") == lock_path(tmp_path, tmp_path / "a")


def test_image_check_finds_missing_and_cut_short_images(tmp_path, coco_sample):
    doc = load_json(coco_sample / "annotations" / "instances_val2017.json", label="val")
    folder = tmp_path / "val2017"
    folder.mkdir()
    names = image_files(doc)
    for name in names:
        (folder / name).write_bytes((coco_sample / "val2017" / name).read_bytes())
    check_images(doc, folder, label="val")
    padded = folder / names[0]
    padded.write_bytes(padded.read_bytes() + b"\0" * 16)  # bytes after the end marker are fine
    check_images(doc, folder, label="val")
    cut = folder / names[1]
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    (folder / names[2]).unlink()
    total = len(names)
    with pytest.raises(
        CorruptDataError,
        match=re.escape(
            f"1 of {total} images listed in val are missing in {folder}: {names[2]}; copy"
        ),
    ):
        check_images(doc, folder, label="val")
    (folder / names[2]).write_bytes((coco_sample / "val2017" / names[2]).read_bytes())
    with pytest.raises(
        CorruptDataError,
        match=re.escape(
            f"1 of {total} images listed in val are truncated in {folder}: {names[1]}; re-download"
        ),
    ):
        check_images(doc, folder, label="val")
