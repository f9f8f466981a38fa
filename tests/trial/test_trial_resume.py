"""Constant-time resume (issue 10): samplers positioned at batch N, nothing replayed.

The Runner tests train a real mmengine Runner on the real COCO sample (one-weight model, see
resume_helpers.py) on 1 rank and on 2 gloo ranks with DDP and persistent data loader workers, and
compare the image ids each rank trains on after a resume with an uninterrupted run's. The sampler
tests check every supported sampler combination against the stock mmengine/mmdet classes.
"""

from __future__ import annotations

import itertools
import json
import pickle
import random
import uuid

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from mmdet.datasets import CocoDataset
from mmdet.datasets.samplers import AspectRatioBatchSampler
from mmengine.dataset import DefaultSampler, InfiniteSampler
from resume_helpers import BATCH, count_loads, rank_main, read_ids, run
from torch.utils.data import BatchSampler

from common import free_port
from trial.engine.resume import resumable_loader_cfg
from trial.engine.samplers import (
    ReseedFromIndex,
    ResumableAspectRatioBatchSampler,
    ResumableDefaultSampler,
    ResumableInfiniteSampler,
    SeededIndex,
    position_batch_sampler,
    sample_seed,
)

STRAIGHT_ITERS, RESUME_AT = 20, 10
WORKERS, PREFETCH = 2, 2  # torch's default prefetch_factor: batches in flight per worker


def _train(world_size: int, **kwargs) -> None:
    if world_size == 1:
        run(**kwargs, rank=0)
    else:
        mp.spawn(rank_main, args=(world_size, free_port(), kwargs), nprocs=world_size, join=True)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("world_size", "sampler", "batch_sampler"),
    [
        (1, "InfiniteSampler", "AspectRatioBatchSampler"),  # what the trial's configs use
        (2, "InfiniteSampler", "AspectRatioBatchSampler"),
        (1, "DefaultSampler", None),  # epochs: the resume lands in the second one
    ],
)
def test_resume_at_n_trains_on_the_same_images_per_rank_without_loading_skipped_ones(
    tmp_path, coco_sample, world_size, sampler, batch_sampler
):
    common = dict(
        coco=str(coco_sample),
        max_iters=STRAIGHT_ITERS,
        num_workers=WORKERS,
        sampler=sampler,
        batch_sampler=batch_sampler,
    )
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _train(
        world_size,
        **common,
        work_dir=str(straight),
        record_dir=str(straight / "record"),
        checkpoint_at=RESUME_AT,
        resume_from=None,
        name=f"straight-{uuid.uuid4().hex[:8]}",
    )
    checkpoint = straight / f"iter_{RESUME_AT}.pth"
    assert checkpoint.is_file()
    _train(
        world_size,
        **common,
        work_dir=str(resumed),
        record_dir=str(resumed / "record"),
        checkpoint_at=100,
        resume_from=str(checkpoint),
        name=f"resumed-{uuid.uuid4().hex[:8]}",
    )
    for rank in range(world_size):
        first = read_ids(straight / "record", rank)
        second = read_ids(resumed / "record", rank)
        assert len(first) == STRAIGHT_ITERS and len(second) == STRAIGHT_ITERS - RESUME_AT
        # same images in the same batches, and the same random flips (trial/engine/samplers.py seeds)
        assert second == first[RESUME_AT:], f"rank {rank}"
        flips = {flipped for batch in first for _, flipped in batch}
        assert flips == {True, False}  # the flip is random, so the equality above means something
        # Loaded: the batches trained plus at most what the workers prefetch; a replay would
        # have loaded the RESUME_AT skipped batches on top.
        in_flight = WORKERS * PREFETCH * BATCH
        assert count_loads(straight / "record", rank) >= STRAIGHT_ITERS * BATCH
        assert count_loads(resumed / "record", rank) <= len(second) * BATCH + in_flight
        assert len(second) * BATCH + in_flight < STRAIGHT_ITERS * BATCH  # the bound tells apart
    if world_size == 2:  # the ranks split the data: they do not train on the same batches
        assert read_ids(straight / "record", 0) != read_ids(straight / "record", 1)
    log = "\n".join(p.read_text() for p in resumed.glob("*/*.log"))
    assert "Advance dataloader" not in log
    assert f"resume at iteration {RESUME_AT}" in log and "no sample replayed" in log
    epoch = RESUME_AT * BATCH * world_size // 16 if sampler == "DefaultSampler" else 0
    assert f"positioned at batch {RESUME_AT} (epoch {epoch})" in log


# --- the samplers against the stock classes -------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(coco_sample, tmp_path_factory):
    """The sample's train annotations as a CocoDataset (the samplers read sizes, never images),
    with every third image made taller than wide and every other one wide, so that both
    aspect-ratio buckets fill whatever the sample (the shapes set's images are all square)."""
    ann = json.loads((coco_sample / "annotations" / "instances_train2017.json").read_text())
    for index, image in enumerate(ann["images"]):
        short, long = sorted((image["width"], image["height"]))
        tall = index % 3 == 0
        image["width"], image["height"] = (short, long + 1) if tall else (long, short)
    path = tmp_path_factory.mktemp("resume") / "instances_train2017.json"
    path.write_text(json.dumps(ann))
    data = CocoDataset(
        data_root=str(coco_sample),
        ann_file=str(path),
        data_prefix=dict(img="train2017/"),
        filter_cfg=None,
        pipeline=[],
    )
    data.full_init()
    return data


SAMPLERS = {
    "infinite": (InfiniteSampler, ResumableInfiniteSampler, {}),
    "infinite-ordered": (InfiniteSampler, ResumableInfiniteSampler, {"shuffle": False}),
    "default": (DefaultSampler, ResumableDefaultSampler, {}),
    "default-ordered": (DefaultSampler, ResumableDefaultSampler, {"shuffle": False}),
    "default-no-round-up": (DefaultSampler, ResumableDefaultSampler, {"round_up": False}),
}
BATCHERS = {
    "batch": (BatchSampler, BatchSampler),
    "aspect": (AspectRatioBatchSampler, ResumableAspectRatioBatchSampler),
}


def _build(sampler_cls, batcher_cls, dataset, *, kwargs, batch_size, drop_last):
    sampler = sampler_cls(dataset, seed=7, **kwargs)
    return batcher_cls(sampler, batch_size=batch_size, drop_last=drop_last)


def _batches(batch_sampler, count: int, *, epoch: int = 0) -> list[list[int]]:
    """``count`` batches the way a training loop draws them: set_epoch and again at each end."""
    out: list[list[int]] = []
    while len(out) < count:
        out.extend(itertools.islice(iter(batch_sampler), count - len(out)))
        if len(out) < count:
            epoch += 1
            batch_sampler.sampler.set_epoch(epoch)
    return out


def _seeds(batches: list[list[int]]) -> list[list[int]]:
    return [[index.seed for index in batch] for batch in batches]


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("batcher", BATCHERS)
@pytest.mark.parametrize(("world_size", "batch_size", "drop_last"), [(1, 2, False), (2, 3, True)])
def test_positioned_samplers_continue_exactly_like_the_stock_ones(
    monkeypatch, dataset, sampler, batcher, world_size, batch_size, drop_last
):
    stock_sampler, resumable_sampler, kwargs = SAMPLERS[sampler]
    stock_batcher, resumable_batcher = BATCHERS[batcher]
    for rank in range(world_size):  # what get_dist_info says inside rank `rank` of a group
        monkeypatch.setattr(
            "mmengine.dataset.sampler.get_dist_info", lambda r=rank: (r, world_size)
        )
        common = dict(kwargs=kwargs, batch_size=batch_size, drop_last=drop_last)
        reference = _batches(_build(stock_sampler, stock_batcher, dataset, **common), 60)
        seeded = _batches(_build(resumable_sampler, resumable_batcher, dataset, **common), 60)
        assert seeded == reference  # uninterrupted, the resumable classes are the stock ones
        for resume_at in (1, 5, 8, 23, 41):
            batches = _build(resumable_sampler, resumable_batcher, dataset, **common)
            epoch = position_batch_sampler(batches, resume_at)
            assert epoch is not None
            resumed = _batches(batches, 60 - resume_at, epoch=epoch)
            assert resumed == reference[resume_at:], (rank, resume_at)
            assert _seeds(resumed) == _seeds(seeded[resume_at:]), (rank, resume_at)


def test_unknown_samplers_are_left_to_the_replay(dataset):
    custom = BatchSampler(ResumableInfiniteSampler(dataset, seed=0), batch_size=2, drop_last=False)

    class Grouping(BatchSampler):
        pass

    assert position_batch_sampler(Grouping(custom.sampler, 2, False), 3) is None
    stock = BatchSampler(InfiniteSampler(dataset, seed=0), batch_size=2, drop_last=False)
    assert position_batch_sampler(stock, 3) is None


def test_loader_config_swaps_stock_samplers_and_seeds_the_pipeline_without_touching_the_input():
    pipeline = [dict(type="LoadImageFromFile"), dict(type="RandomFlip", prob=0.5)]
    cfg = dict(
        batch_size=2,
        sampler=dict(type="InfiniteSampler", shuffle=True),
        batch_sampler=dict(type="mmdet.AspectRatioBatchSampler"),
        dataset=dict(
            type="RepeatDataset", times=2, dataset=dict(type="CocoDataset", pipeline=pipeline)
        ),
    )
    swapped = resumable_loader_cfg(cfg)
    assert swapped["sampler"] == dict(type="ResumableInfiniteSampler", shuffle=True)
    assert swapped["batch_sampler"] == dict(type="ResumableAspectRatioBatchSampler")
    assert swapped["dataset"]["dataset"]["pipeline"] == [dict(type="ReseedFromIndex"), *pipeline]
    assert cfg["sampler"]["type"] == "InfiniteSampler"  # the caller's config is unchanged
    assert len(pipeline) == 2
    custom = dict(sampler=dict(type="ClassAwareSampler"), batch_sampler=None)
    assert resumable_loader_cfg(custom) == custom


def test_seeded_indices_reach_the_pipeline_and_make_its_randomness_repeatable(dataset):
    """The seed travels with the index (also pickled to a worker) and fixes the random draws."""
    reseed = ReseedFromIndex()
    index = pickle.loads(pickle.dumps(SeededIndex(3, seed=sample_seed(0, 0, 41))))
    assert index == 3 and isinstance(index, SeededIndex)
    draws = []
    for _ in range(2):
        info = reseed(dataset.get_data_info(index))
        assert info["sample_idx"] == 3
        draws.append((random.random(), np.random.rand(), torch.rand(1).item()))
    assert draws[0] == draws[1]
    reseed(dataset.get_data_info(3))  # a plain index: no reseed, the generators run on
    assert (random.random(), np.random.rand(), torch.rand(1).item()) != draws[0]


def test_the_sampler_dataset_has_both_aspect_buckets(dataset):
    """The aspect-ratio cases above only mean something if both buckets fill."""
    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    assert {info["width"] < info["height"] for info in infos} == {True, False}


def test_positioning_reads_annotations_only(dataset, monkeypatch):
    """Positioning at a large N never asks the dataset for a sample (no image is loaded)."""
    monkeypatch.setattr(
        CocoDataset, "__getitem__", lambda self, i: pytest.fail("a sample was loaded")
    )
    batches = ResumableAspectRatioBatchSampler(ResumableInfiniteSampler(dataset, seed=1), 2)
    assert position_batch_sampler(batches, 100_000) == 0
    assert len(next(iter(batches))) == 2
