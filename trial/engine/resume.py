"""An IterBasedTrainLoop that resumes at iteration N by positioning its samplers, not by replaying.

mmengine 0.10.7's ``IterBasedTrainLoop.run()`` resumes by calling ``next()`` on the data loader N
times: every skipped batch is read, decoded and augmented, then thrown away. This loop (registered as
``ResumableIterBasedTrainLoop``; trial/settings/config.py selects it) behaves the same in an uninterrupted run
and differs only there: it swaps the stock samplers named in the data loader config for their
resumable subclasses (trial/engine/samplers.py: the same index sequence), and at ``run()`` positions them at
batch N before the data loader's iterator (and its workers) start. Samplers it does not know are
replayed the mmengine way, with a warning that names them.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from typing import Any

from mmdet.registry import LOOPS
from mmengine.logging import print_log
from mmengine.runner import IterBasedTrainLoop
from mmengine.runner.base_loop import BaseLoop
from mmengine.runner.utils import calc_dynamic_intervals

from trial.engine.samplers import position_batch_sampler, resumable_type

RESEED = {"type": "ReseedFromIndex"}  # see trial/engine/samplers.py


@LOOPS.register_module()
class ResumableIterBasedTrainLoop(IterBasedTrainLoop):
    """mmengine's IterBasedTrainLoop with a constant-time resume (same arguments, same hooks)."""

    def __init__(
        self,
        runner: Any,
        dataloader: Any,
        max_iters: int,
        val_begin: int = 1,
        val_interval: int = 1000,
        dynamic_intervals: list[tuple[int, int]] | None = None,
    ) -> None:
        if isinstance(dataloader, dict):
            dataloader = resumable_loader_cfg(dataloader)
        # IterBasedTrainLoop.__init__ would start the data loader here (workers prefetch from
        # batch 0 before the checkpoint is even loaded), so set its state without that call.
        BaseLoop.__init__(self, runner, dataloader)
        self._max_iters = int(max_iters)
        if self._max_iters != max_iters:
            raise ValueError(f"train_cfg.max_iters must be an integer, got {max_iters!r}")
        self._max_epochs = 1
        self._epoch = 0
        self._iter = 0
        self.val_begin = val_begin
        self.val_interval = val_interval
        self.stop_training = False
        self.runner.visualizer.dataset_meta = getattr(self.dataloader.dataset, "metainfo", None)
        self.dataloader_iterator: EpochIterator | None = None  # made in run(), after resume
        self.dynamic_milestones, self.dynamic_intervals = calc_dynamic_intervals(
            self.val_interval, dynamic_intervals
        )

    def run(self) -> Any:
        """Train from ``self.iter`` (0, or the resumed iteration) to ``max_iters``."""
        self.runner.call_hook("before_train")
        self.runner.call_hook("before_train_epoch")
        self.dataloader_iterator = self._start_data()
        while self._iter < self._max_iters and not self.stop_training:
            self.runner.model.train()
            data_batch = next(self.dataloader_iterator)
            self.run_iter(data_batch)
            self._decide_current_val_interval()
            if (
                self.runner.val_loop is not None
                and self._iter >= self.val_begin
                and (self._iter % self.val_interval == 0 or self._iter == self._max_iters)
            ):
                self.runner.val_loop.run()
        self.runner.call_hook("after_train_epoch")
        self.runner.call_hook("after_train")
        return self.runner.model

    def _start_data(self) -> EpochIterator:
        if self._iter == 0:
            return EpochIterator(self.dataloader, epoch=0)
        batch_sampler = self.dataloader.batch_sampler
        samplers = (
            f"{type(batch_sampler).__name__} over "
            f"{type(getattr(batch_sampler, 'sampler', None)).__name__}"
        )
        started = time.perf_counter()
        epoch = position_batch_sampler(batch_sampler, self._iter)
        if epoch is not None:
            print_log(
                f"resume at iteration {self._iter}: {samplers} positioned at batch {self._iter} "
                f"(epoch {epoch}) in {time.perf_counter() - started:.3f} s; no sample replayed",
                logger="current",
            )
            return EpochIterator(self.dataloader, epoch=epoch)
        print_log(
            f"resume at iteration {self._iter}: cannot position {samplers}; loading and "
            f"discarding {self._iter} batches instead (use InfiniteSampler or DefaultSampler, "
            "optionally under AspectRatioBatchSampler, to resume without this replay)",
            logger="current",
            level=logging.WARNING,
        )
        iterator = EpochIterator(self.dataloader, epoch=0)
        for _ in range(self._iter):
            next(iterator)
        return iterator


class EpochIterator:
    """Iterate a data loader forever, starting a new epoch (``set_epoch``) whenever it ends.

    mmengine's own iterator always starts counting epochs at 0; this one starts at the epoch the
    resume positioned the sampler in, so a finite sampler shuffles each later epoch as an
    uninterrupted run would.
    """

    def __init__(self, dataloader: Any, *, epoch: int) -> None:
        self._dataloader = dataloader
        self._epoch = epoch
        self._iterator = iter(dataloader)

    def __iter__(self) -> EpochIterator:
        return self

    def __next__(self) -> Sequence[dict]:
        try:
            return next(self._iterator)
        except StopIteration:
            self._epoch += 1
            sampler = getattr(self._dataloader.batch_sampler, "sampler", None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(self._epoch)
            time.sleep(2)  # as mmengine: lets persistent workers settle between epochs
            self._iterator = iter(self._dataloader)
            return next(self._iterator)


def resumable_loader_cfg(cfg: dict) -> dict:
    """A copy of a data loader config with stock samplers replaced by their resumable subclasses
    and ``ReseedFromIndex`` first in the (innermost) dataset's pipeline."""
    cfg = copy.deepcopy(cfg)
    for key in ("sampler", "batch_sampler"):
        spec = cfg.get(key)
        if isinstance(spec, dict) and "type" in spec:
            spec["type"] = resumable_type(spec["type"])
    dataset = cfg.get("dataset")
    while isinstance(dataset, dict) and isinstance(dataset.get("dataset"), dict):
        dataset = dataset["dataset"]  # RepeatDataset and other wrappers
    pipeline = dataset.get("pipeline") if isinstance(dataset, dict) else None
    if isinstance(pipeline, list) and RESEED not in pipeline:
        pipeline.insert(0, dict(RESEED))
    return cfg
