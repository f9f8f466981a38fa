"""A real mmengine Runner for the resume tests: real COCO dataset, pipeline, samplers, data loader
workers, checkpoints and (for 2 ranks) a gloo process group with DDP. Only the model is a one-weight
stand-in that writes down the image ids of every batch it trains on, so the test is about data order.

The pipeline's ``CountLoads`` step appends one line per loaded sample, per process, to a directory:
that count is how the test proves no skipped sample was loaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from mmcv.transforms import BaseTransform
from mmdet.registry import TRANSFORMS
from mmengine.model import BaseModel

import trial.engine.resume  # noqa: F401  (registers the loop and samplers)

BATCH = 2


@TRANSFORMS.register_module()
class CountLoads(BaseTransform):
    """Pipeline step after the image decode: records that this sample was loaded."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir

    def transform(self, results: dict) -> dict:
        path = Path(self.log_dir) / f"loads-{os.getpid()}.txt"
        with path.open("a") as f:
            f.write(f"{results['img_id']}\n")
        return results


class IdRecorder(BaseModel):
    """A one-weight model that appends each training batch's [image id, flipped] pairs to a file."""

    def __init__(self, ids_file: str) -> None:
        super().__init__()
        self.ids_file = ids_file
        self.layer = torch.nn.Linear(1, 1, bias=False)

    def forward(self, inputs: Any, data_samples: Any = None, mode: str = "tensor") -> Any:
        out = self.layer(torch.ones(1, 1))
        if mode == "loss":
            with open(self.ids_file, "a") as f:
                f.write(json.dumps([[s.img_id, s.flip] for s in data_samples]) + "\n")
            return {"loss": (out**2).sum()}
        return [out]


def run(
    *,
    coco: str,
    work_dir: str,
    record_dir: str,
    rank: int,
    max_iters: int,
    checkpoint_at: int,
    resume_from: str | None,
    num_workers: int,
    name: str,
    launcher: str = "none",
    sampler: str = "InfiniteSampler",
    batch_sampler: str | None = "AspectRatioBatchSampler",
) -> None:
    """Train ``max_iters`` with the trial's loop; ids go to ``record_dir/ids-rank<r>.jsonl``."""
    from mmengine.runner import Runner

    record = Path(record_dir)
    loads = record / f"loads-rank{rank}"
    loads.mkdir(parents=True, exist_ok=True)
    dataset = dict(
        type="CocoDataset",
        data_root=coco,
        ann_file="annotations/instances_train2017.json",
        data_prefix=dict(img="train2017/"),
        filter_cfg=None,
        indices=16,  # coco-tiny's size, the shapes set's first 16: 8 batches an epoch on 1 rank
        pipeline=[
            dict(type="LoadImageFromFile"),
            dict(type="CountLoads", log_dir=str(loads)),
            dict(type="RandomFlip", prob=0.5),  # a random augmentation, recorded per sample
            dict(type="PackDetInputs", meta_keys=("img_id", "flip")),
        ],
    )
    runner = Runner(
        model=IdRecorder(str(record / f"ids-rank{rank}.jsonl")),
        work_dir=work_dir,
        experiment_name=name,
        train_dataloader=dict(
            batch_size=BATCH,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            sampler=dict(type=sampler, shuffle=True),
            batch_sampler=dict(type=batch_sampler) if batch_sampler else None,
            dataset=dataset,
        ),
        train_cfg=dict(type="ResumableIterBasedTrainLoop", max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.01)),
        default_hooks=dict(
            checkpoint=dict(type="CheckpointHook", interval=checkpoint_at, by_epoch=False),
            logger=dict(type="LoggerHook", interval=1),
        ),
        log_processor=dict(by_epoch=False),
        randomness=dict(seed=0),
        default_scope="mmdet",
        launcher=launcher,
        # mmengine passes device_ids=[LOCAL_RANK] by default, which DDP refuses for a CPU module;
        # the config's value wins over that default
        cfg=dict(model_wrapper_cfg=dict(type="MMDistributedDataParallel", device_ids=None)),
        load_from=resume_from,
        resume=resume_from is not None,
    )
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = (
        "1"  # mmengine checkpoints (see trial/runtime/train.py)
    )
    runner.train()


def rank_main(rank: int, world_size: int, port: int, kwargs: dict) -> None:
    """One rank of a gloo process group (the Runner sees an initialised group, launcher pytorch)."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
    )
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        run(**kwargs, rank=rank, launcher="pytorch")
    finally:
        torch.distributed.destroy_process_group()


def read_ids(record_dir: Path, rank: int) -> list[list[list]]:
    """The [image id, flipped] pairs of each batch rank ``rank`` trained on, in order."""
    path = Path(record_dir) / f"ids-rank{rank}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def count_loads(record_dir: Path, rank: int) -> int:
    """How many samples rank ``rank``'s pipeline loaded (main process and workers together)."""
    files = (Path(record_dir) / f"loads-rank{rank}").glob("loads-*.txt")
    return sum(len(f.read_text().splitlines()) for f in files)
