"""The per-node parsed-annotations cache (issue 22): NodeCachedCocoDataset equals mmdet's
CocoDataset entry by entry (the real COCO sample and a generated set, train filtered and val),
concurrent processes build an entry once, a killed build leaves nothing at the final path, and a
changed, stale or corrupt entry is rebuilt, never used."""

from __future__ import annotations

import itertools
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS
from mmengine.registry import DefaultScope

from common import REPO_ROOT as REPO
from trial.engine.anncache import SUFFIX
from trial.engine.cached_dataset import NodeCachedCocoDataset
from trial.testing.cocogen import make_coco_scale

TRAIN_FILTER = {"filter_empty_gt": True, "min_size": 32}  # what mmdet's COCO configs filter


def dataset_args(root: Path, split: str, **extra) -> dict:
    """A trial-like dataset config: train filtered, val in test mode."""
    args = {
        "ann_file": str(root / "annotations" / f"instances_{split}2017.json"),
        "data_prefix": {"img": f"{root}/{split}2017/"},
        "pipeline": [],
    }
    args.update({"filter_cfg": TRAIN_FILTER} if split == "train" else {"test_mode": True})
    return args | extra


def assert_same(ours, theirs) -> None:
    assert len(ours) == len(theirs) > 0
    for i in range(len(theirs)):
        assert ours.get_data_info(i) == theirs.get_data_info(i), i
    assert ours.metainfo == theirs.metainfo
    assert ours.cat_ids == theirs.cat_ids
    assert ours.cat2label == theirs.cat2label
    assert ours.cat_img_map == theirs.cat_img_map
    assert bytes(ours.data_bytes) == bytes(theirs.data_bytes)  # the very bytes mmengine made
    assert np.array_equal(ours.data_address, theirs.data_address)


def entries(cache: Path) -> list[Path]:
    return sorted(cache.glob(f"derived/*/*{SUFFIX}"))


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """A small generated COCO-like set: crowds, tiny boxes, images without annotations."""
    return make_coco_scale(tmp_path_factory.mktemp("gen") / "coco", scale=0.005)


@pytest.mark.parametrize("split", ["train", "val"])
def test_equal_to_mmdet_on_the_real_sample_built_and_mapped(coco_sample, tmp_path, split):
    plain = CocoDataset(**dataset_args(coco_sample, split))
    built = NodeCachedCocoDataset(cache_dir=str(tmp_path), **dataset_args(coco_sample, split))
    mapped = NodeCachedCocoDataset(cache_dir=str(tmp_path), **dataset_args(coco_sample, split))
    assert len(entries(tmp_path)) == 1
    assert NodeCachedCocoDataset._is_mapped(mapped.__dict__)
    assert not mapped.data_bytes.flags.writeable  # a read-only map of the cache file
    assert_same(built, plain)
    assert_same(mapped, plain)
    assert isinstance(mapped, CocoDataset)


@pytest.mark.parametrize("split", ["train", "val"])
def test_equal_to_mmdet_on_a_generated_set(generated, tmp_path, split):
    plain = CocoDataset(**dataset_args(generated, split))
    n_images = len(json.loads(Path(plain.ann_file).read_text())["images"])
    if split == "train":
        assert len(plain) < n_images  # the filter dropped images without annotations
    NodeCachedCocoDataset(cache_dir=str(tmp_path), **dataset_args(generated, split))
    assert_same(NodeCachedCocoDataset(cache_dir=str(tmp_path), **dataset_args(generated, split)),
                plain)  # fmt: skip


def test_gs_read_through_prefixes_are_part_of_the_entry(generated, tmp_path):
    """Images read through gs:// (staging/backend.py): the paths in the list carry the prefix."""
    gs = dataset_args(generated, "val", data_prefix={"img": "gs://bucket/coco/val2017/"})
    disk = dataset_args(generated, "val")
    ours = NodeCachedCocoDataset(cache_dir=str(tmp_path), **gs)
    assert_same(ours, CocoDataset(**gs))
    assert ours.get_data_info(0)["img_path"].startswith("gs://bucket/coco/val2017/")
    assert_same(NodeCachedCocoDataset(cache_dir=str(tmp_path), **disk), CocoDataset(**disk))
    assert len(entries(tmp_path)) == 2


def test_every_shaping_argument_gets_its_own_entry(generated, tmp_path):
    base = dataset_args(generated, "train")
    variants = [
        base,
        base | {"filter_cfg": {"filter_empty_gt": False}},
        base | {"metainfo": {"classes": ("person", "car")}},
        base | {"indices": 50},
    ]
    for args in variants:
        assert_same(NodeCachedCocoDataset(cache_dir=str(tmp_path), **args), CocoDataset(**args))
    assert len(entries(tmp_path)) == len(variants)


def test_a_changed_annotation_file_gets_a_new_entry(generated, tmp_path):
    ann = tmp_path / "annotations" / "instances_train2017.json"
    ann.parent.mkdir()
    doc = json.loads((generated / ann.relative_to(tmp_path)).read_text())
    ann.write_text(json.dumps(doc))
    args = dataset_args(tmp_path, "train", data_prefix={"img": f"{generated}/train2017/"})
    cache = tmp_path / "cache"
    before = NodeCachedCocoDataset(cache_dir=str(cache), **args)
    doc["annotations"] = doc["annotations"][:-40]
    ann.write_text(json.dumps(doc))
    after = NodeCachedCocoDataset(cache_dir=str(cache), **args)
    assert_same(after, CocoDataset(**args))
    assert sum(len(after.get_data_info(i)["instances"]) for i in range(len(after))) < sum(
        len(before.get_data_info(i)["instances"]) for i in range(len(before))
    )
    assert len(entries(cache)) == 2  # the old entry stays for whoever still maps it


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "other key"])
def test_a_corrupt_or_stale_entry_is_rebuilt_not_used(generated, tmp_path, damage, caplog):
    args = dataset_args(generated, "val")
    NodeCachedCocoDataset(cache_dir=str(tmp_path), **args)
    (entry,) = entries(tmp_path)
    entry.chmod(0o644)
    data = bytearray(entry.read_bytes())
    if damage == "flip a byte":
        data[len(data) // 2] ^= 0x01  # inside data_bytes
    elif damage == "truncate":
        data = data[: len(data) - 100]
    else:  # a complete entry for other inputs, sitting at this key's path
        NodeCachedCocoDataset(cache_dir=str(tmp_path / "other"), **dataset_args(generated, "train"))
        (other,) = entries(tmp_path / "other")
        data = bytearray(other.read_bytes())
    entry.write_bytes(bytes(data))
    rebuilt = NodeCachedCocoDataset(cache_dir=str(tmp_path), **args)
    assert "unusable" in caplog.text
    assert_same(rebuilt, CocoDataset(**args))
    caplog.clear()
    again = NodeCachedCocoDataset(cache_dir=str(tmp_path), **args)
    assert "unusable" not in caplog.text  # the rebuilt entry replaced the bad one
    assert NodeCachedCocoDataset._is_mapped(again.__dict__)


def test_wrappers_and_resume_samplers_see_the_same_dataset(generated, tmp_path, monkeypatch):
    from trial.engine.samplers import (
        ResumableAspectRatioBatchSampler,
        ResumableInfiniteSampler,
        position_batch_sampler,
    )

    inner = dataset_args(generated, "train")
    cached = inner | {"type": "NodeCachedCocoDataset", "cache_dir": str(tmp_path)}
    for wrapper in ({"type": "RepeatDataset", "times": 2},
                    {"type": "ClassBalancedDataset", "oversample_thr": 0.05}):  # fmt: skip
        with DefaultScope.overwrite_default_scope("mmdet"):  # what mmdet configs set
            ours = DATASETS.build(wrapper | {"dataset": cached})
            theirs = DATASETS.build(wrapper | {"dataset": inner | {"type": "CocoDataset"}})
        assert len(ours) == len(theirs)
        assert [ours.get_data_info(i) for i in range(0, len(ours), 7)] == [
            theirs.get_data_info(i) for i in range(0, len(theirs), 7)
        ]
    ours = NodeCachedCocoDataset(cache_dir=str(tmp_path), **inner)
    theirs = CocoDataset(**inner)
    batches = []
    for dataset in (ours, theirs):
        sampler = ResumableAspectRatioBatchSampler(ResumableInfiniteSampler(dataset, seed=3), 2)
        position_batch_sampler(sampler, 37)
        batches.append(list(itertools.islice(iter(sampler), 5)))
    assert batches[0] == batches[1]


def test_pickling_passes_the_map_not_the_bytes(generated, tmp_path):
    """A spawned DataLoader worker (or a deepcopy) maps the file again instead of copying it."""
    import copy

    args = dataset_args(generated, "train")
    ours = NodeCachedCocoDataset(cache_dir=str(tmp_path), **args)
    blob = pickle.dumps(ours)
    assert len(blob) < ours.data_bytes.nbytes / 10
    for twin in (pickle.loads(blob), copy.deepcopy(ours)):
        assert not twin.data_bytes.flags.writeable
        assert_same(twin, CocoDataset(**args))
    every_third = list(range(0, len(ours), 3))
    subset = ours.get_subset(every_third)  # mmengine copies a subset out of the map
    theirs = CocoDataset(**args).get_subset(every_third)
    for twin in (subset, pickle.loads(pickle.dumps(subset))):
        assert [twin.get_data_info(i) for i in range(len(twin))] == [
            theirs.get_data_info(i) for i in range(len(theirs))
        ]


def test_without_a_cache_folder_or_serialization_it_is_plain_mmdet(generated, tmp_path):
    for extra in ({"cache_dir": None}, {"cache_dir": str(tmp_path), "serialize_data": False}):
        args = dataset_args(generated, "val")
        ours = NodeCachedCocoDataset(**args, **extra)
        plain = CocoDataset(**args, serialize_data=extra.get("serialize_data", True))
        assert [ours.get_data_info(i) for i in range(len(ours))] == [
            plain.get_data_info(i) for i in range(len(plain))
        ]
    assert entries(tmp_path) == []


CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    import mmdet.datasets.base_det_dataset as base
    import staging.cache
    from trial.engine.cached_dataset import NodeCachedCocoDataset

    args, cache, go, log = json.loads(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4]
    parse = base.BaseDetDataset.full_init

    def counted(self):  # mmdet's own parse, counted
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\\n")
        return parse(self)

    base.BaseDetDataset.full_init = counted
    if os.environ.get("SLOW_FLUSH"):  # a build that is killed while it makes its file durable
        staging.cache.make_durable_one = lambda path: time.sleep(600)
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.005)
    ds = NodeCachedCocoDataset(cache_dir=cache, **args)
    print(json.dumps({"len": len(ds), "bytes": int(ds.data_bytes.nbytes)}), flush=True)
    """
)


def _start_child(args: dict, cache: Path, go: Path, log: Path, **env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(args), str(cache), str(go), str(log)],
        cwd=REPO, stdout=subprocess.PIPE, text=True, env=os.environ | env,
    )  # fmt: skip


@pytest.mark.slow  # ~30-45 s: 3 fresh interpreters import mmdet at once
def test_processes_starting_at_once_build_the_entry_once(generated, tmp_path):
    args = dataset_args(generated, "train")
    go, log, cache = tmp_path / "go", tmp_path / "parses.log", tmp_path / "cache"
    children = [_start_child(args, cache, go, log) for _ in range(3)]
    for child in children:
        assert child.stdout.readline().strip() == "ready"
    go.touch()
    # the last line: pycocotools prints its progress to stdout
    results = [json.loads(child.communicate(timeout=300)[0].splitlines()[-1]) for child in children]
    assert all(child.returncode == 0 for child in children)
    assert len(log.read_text().split()) == 1  # one mmdet parse on the "node"
    expected = CocoDataset(**args)
    assert results == [{"len": len(expected), "bytes": expected.data_bytes.nbytes}] * 3
    assert len(entries(cache)) == 1
    assert list((entries(cache)[0].parent / ".partial").iterdir()) == []


@pytest.mark.slow  # ~15 s: one fresh interpreter imports mmdet
def test_a_build_killed_mid_write_leaves_nothing_at_the_final_path(generated, tmp_path):
    args = dataset_args(generated, "train")
    go, log, cache = tmp_path / "go", tmp_path / "parses.log", tmp_path / "cache"
    child = _start_child(args, cache, go, log, SLOW_FLUSH="1")
    assert child.stdout.readline().strip() == "ready"
    go.touch()
    deadline = time.monotonic() + 120
    while not list(cache.glob("derived/*/.partial/*.incomplete")):
        assert time.monotonic() < deadline and child.poll() is None
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert entries(cache) == []  # the temp file was written, never renamed
    (leftover,) = cache.glob("derived/*/.partial/*.incomplete")
    assert_same(NodeCachedCocoDataset(cache_dir=str(cache), **args), CocoDataset(**args))
    assert not leftover.exists()  # the next builder removed the dead writer's temp file
    assert len(entries(cache)) == 1


def test_the_trial_config_parses_coco_once_per_node_and_leaves_chosen_types(tmp_path):
    from dataclasses import replace

    from trial.settings.config import DataPaths, TrainSettings, build_config, load_base_config

    data = DataPaths("/d/t.json", "/d/v.json", "/d/t/", "/d/v/", ann_cache=str(tmp_path))
    settings = TrainSettings(data=data, work_dir="/w", max_iters=10, val_interval=5,
                             checkpoint_interval=5)  # fmt: skip
    base = load_base_config("mmdet::retinanet/retinanet_r50_fpn_1x_coco.py")
    loaders = ("train_dataloader", "val_dataloader", "test_dataloader")
    cfg = build_config(base, settings)
    for loader in loaders:
        assert cfg[loader]["dataset"]["type"] == "NodeCachedCocoDataset"
        assert cfg[loader]["dataset"]["cache_dir"] == str(tmp_path)
    assert cfg["val_evaluator"]["ann_file"] == "/d/v.json"  # CocoMetric reads the JSON itself
    plain = build_config(base, replace(settings, data=replace(data, ann_cache=None)))
    assert {plain[loader]["dataset"]["type"] for loader in loaders} == {"CocoDataset"}
    chosen = build_config(
        base, replace(settings, overrides={"train_dataloader.dataset.type": "LVISV1Dataset"})
    )
    assert chosen["train_dataloader"]["dataset"]["type"] == "LVISV1Dataset"
    assert "cache_dir" not in chosen["train_dataloader"]["dataset"]


def test_data_paths_name_the_node_cache(coco_sample, tmp_path):
    from common import cache_root
    from trial.runtime.data import coco_dir_paths, staged_data_paths

    assert coco_dir_paths(coco_sample, check_json=False).ann_cache == str(cache_root() / "anncache")
    section = {
        "source": str(coco_sample),
        "cache": str(tmp_path / "c"),
        "dest": str(tmp_path / "d"),
    }
    assert staged_data_paths(section).ann_cache == str(tmp_path / "c")  # staging's node cache
    gs = section | {"source": "gs://bucket/coco"}
    paths = staged_data_paths(gs)
    assert paths.ann_cache == str(tmp_path / "c") and paths.train_images.startswith("gs://")


def test_the_generated_set_is_coco_shaped_and_deterministic(generated, tmp_path):
    from trial.testing.cocogen import TRAIN, VAL, _decimal_text

    for split, (images, anns) in (("train", TRAIN), ("val", VAL)):
        doc = json.loads((generated / "annotations" / f"instances_{split}2017.json").read_text())
        assert len(doc["images"]) == round(images * 0.005)
        assert len(doc["annotations"]) == round(anns * 0.005)
        assert [a["id"] for a in doc["annotations"]] == list(range(1, len(doc["annotations"]) + 1))
        sizes = {i["id"]: (i["width"], i["height"]) for i in doc["images"]}
        for ann in doc["annotations"]:
            x, y, w, h = ann["bbox"]
            width, height = sizes[ann["image_id"]]
            assert x >= 0 and y >= 0
            assert x + w <= width + 0.01 and y + h <= height + 0.01
            if ann["iscrowd"]:
                assert sum(ann["segmentation"]["counts"]) == width * height
            else:
                assert 16 <= len(ann["segmentation"][0]) <= 80
        assert len({c["id"] for c in doc["categories"]}) == 80
        image = generated / f"{split}2017" / doc["images"][0]["file_name"]
        from PIL import Image

        assert Image.open(image).size == sizes[doc["images"][0]["id"]]  # a real JPEG, right size
    values = np.array([0, 7, 10, 99, 100, 12345, 64000])
    text, ends = _decimal_text(values, 2)
    assert text == b"0.00,0.07,0.10,0.99,1.00,123.45,640.00,"
    assert ends.tolist() == [5, 10, 15, 20, 25, 32, 39]
    again = make_coco_scale(tmp_path / "again", scale=0.005)
    for name in ("instances_train2017.json", "instances_val2017.json"):
        assert (again / "annotations" / name).read_bytes() == (
            generated / "annotations" / name
        ).read_bytes()


def test_an_export_names_stock_mmdets_dataset(tmp_path):
    """An exported config loads with stock mmdet: the cached type maps back to CocoDataset."""
    from export_helpers import bundled_types

    from trial.settings.config import DataPaths, TrainSettings, build_config, load_base_config
    from trial.verbs.artifact import standalone_config

    data = DataPaths("/d/t.json", "/d/v.json", "/d/t/", "/d/v/", ann_cache=str(tmp_path))
    settings = TrainSettings(data=data, work_dir="/w", max_iters=10, val_interval=5,
                             checkpoint_interval=5)  # fmt: skip
    cfg = build_config(load_base_config("mmdet::retinanet/retinanet_r50_fpn_1x_coco.py"), settings)
    out = standalone_config(cfg.to_dict(), classes=["a", "b"], palette=None)
    assert out["dataset_type"] == out["test_dataloader"]["dataset"]["type"] == "CocoDataset"
    assert bundled_types(out) == []
    assert "cache_dir" not in json.dumps(out, default=str)


def test_a_cache_that_cannot_be_written_costs_only_the_saving(
    generated, tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv("STAGING_RESERVE_BYTES", str(1 << 60))  # "not enough disk space"
    args = dataset_args(generated, "val")
    ours = NodeCachedCocoDataset(cache_dir=str(tmp_path), **args)
    assert "not cached" in caplog.text and "not enough disk space" in caplog.text
    assert_same(ours, CocoDataset(**args))
    assert entries(tmp_path) == [] and list(tmp_path.glob("derived/*/.partial/*")) == []
