"""Samplers that start mid-stream, so a resume at batch N loads no sample of the N batches before it.

Each class is the stock mmengine/mmdet sampler (same sequence of indices in an uninterrupted run) plus
a ``set_position`` method. Where a rank's index stream is after N batches is pure arithmetic on
indices: the infinite stream's permutations are regenerated from the seed, and the aspect-ratio
batch sampler's buckets are replayed on image sizes from the annotations (``get_data_info``), never on
loaded images. ``position_batch_sampler`` is the one entrypoint the resumable loop calls.

The samplers yield ``SeededIndex`` values: the dataset index (an ``int``, so everything downstream
works unchanged) carrying a seed derived from (sampler seed, epoch, place in the stream of all ranks).
The ``ReseedFromIndex`` pipeline step seeds the random generators with it, so a sample's random
augmentations depend on its place in the stream, not on which worker loads it or what ran before:
the same after a resume, with any number of workers.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmdet.datasets.samplers import AspectRatioBatchSampler
from mmdet.registry import DATA_SAMPLERS, TRANSFORMS
from mmengine.dataset import DefaultSampler, InfiniteSampler
from torch.utils.data import BatchSampler

# stock sampler type -> the resumable subclass registered here (same sequence, plus set_position)
RESUMABLE_TYPES = {
    "InfiniteSampler": "ResumableInfiniteSampler",
    "DefaultSampler": "ResumableDefaultSampler",
    "AspectRatioBatchSampler": "ResumableAspectRatioBatchSampler",
}
MASK64 = (1 << 64) - 1


class SeededIndex(int):
    """A dataset index that carries the seed for its sample's random augmentations."""

    seed: int

    def __new__(cls, index: int, seed: int) -> SeededIndex:
        value = super().__new__(cls, index)
        value.seed = seed
        return value

    def __reduce__(self) -> tuple:  # to data loader workers, seed included
        return (SeededIndex, (int(self), self.seed))


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A 32-bit seed for the sample at ``position`` of the all-ranks stream of ``epoch``
    (splitmix64 over the three numbers: about a microsecond, so seeding costs no throughput)."""
    value = 0
    for part in (seed, epoch, position):
        value = (value ^ part) & MASK64
        value = (value + 0x9E3779B97F4A7C15) & MASK64
        value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & MASK64
        value ^= value >> 31
    return value & 0xFFFFFFFF


@TRANSFORMS.register_module()
class ReseedFromIndex(BaseTransform):
    """First pipeline step: seed ``random``, numpy and torch (CPU) from the sample's ``SeededIndex``
    (about 50 microseconds a sample, against milliseconds for decoding the image).

    A plain ``int`` index (a sampler of another kind, a dataset wrapper that re-indexes, a refetch
    after a failed sample) leaves the generators as they are.
    """

    def transform(self, results: dict) -> dict:
        seed = getattr(results.get("sample_idx"), "seed", None)
        if seed is not None:
            random.seed(seed)
            np.random.seed(seed)
            torch.default_generator.manual_seed(seed)  # CPU only: torch.manual_seed costs ~0.5 ms
        return results


@DATA_SAMPLERS.register_module()
class ResumableInfiniteSampler(InfiniteSampler):
    """mmengine's InfiniteSampler that can continue after this rank's first ``consumed`` indices."""

    def set_position(self, consumed: int) -> None:
        """Make the next iteration yield what the uninterrupted stream yields after ``consumed``."""
        self.indices = self._seeded_stream(self.rank + consumed * self.world_size)

    def _indices_of_rank(self) -> Iterator[int]:
        """This rank's slice of the stream (the stock __init__ calls it), as ``SeededIndex``."""
        return self._seeded_stream(self.rank)

    def seeded(self, index: int, consumed: int) -> SeededIndex:
        """``index`` as this rank's ``consumed``-th sample (0-based) of the stream, seed included."""
        position = self.rank + consumed * self.world_size
        return SeededIndex(index, sample_seed(self.seed, 0, position))

    def plain_stream(self, start: int) -> Iterator[int]:
        """This rank's indices (plain ints) from ``start``, a position in the all-ranks stream.

        Slices each permutation with the rank's stride, as the stock ``islice`` over the all-ranks
        stream does, without stepping through the other ranks' indices one by one.
        """
        if self.size == 0:
            raise ValueError("cannot sample from an empty dataset")
        first_perm, offset = divmod(start, self.size)
        for perm in self._perms_from(first_perm):
            taken = perm[offset :: self.world_size]
            yield from taken
            offset += len(taken) * self.world_size - self.size

    def _seeded_stream(self, start: int) -> Iterator[int]:
        positions = itertools.count(start, self.world_size)
        for position, index in zip(positions, self.plain_stream(start), strict=False):  # endless
            yield SeededIndex(index, sample_seed(self.seed, 0, position))

    def _perms_from(self, first_perm: int) -> Iterator[list[int]]:
        """The stream's passes over the dataset from pass ``first_perm`` on (earlier passes only
        advance the generator: one ``randperm`` each, no sample is touched)."""
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        for _ in range(first_perm if self.shuffle else 0):
            torch.randperm(self.size, generator=generator)
        while True:
            if self.shuffle:
                yield torch.randperm(self.size, generator=generator).tolist()
            else:
                yield list(range(self.size))


@DATA_SAMPLERS.register_module()
class ResumableDefaultSampler(DefaultSampler):
    """mmengine's DefaultSampler that can continue inside an epoch."""

    _skip = 0

    def set_position(self, epoch: int, consumed: int) -> None:
        """The next iteration is epoch ``epoch`` without this rank's first ``consumed`` indices."""
        self.epoch = epoch
        self._skip = consumed

    def __iter__(self) -> Iterator[int]:
        skip, self._skip = self._skip, 0  # only the first pass after a resume starts late
        return iter(self.epoch_indices(self.epoch)[skip:])

    def epoch_indices(self, epoch: int) -> list[int]:
        """This rank's indices of one epoch as ``SeededIndex`` (the sampler's epoch is kept)."""
        saved = self.epoch
        self.epoch = epoch
        try:
            indices = list(super().__iter__())
        finally:
            self.epoch = saved
        positions = itertools.count(self.rank, self.world_size)
        return [
            SeededIndex(i, sample_seed(self.seed, epoch, p))
            for i, p in zip(indices, positions, strict=False)
        ]


@DATA_SAMPLERS.register_module()
class ResumableAspectRatioBatchSampler(AspectRatioBatchSampler):
    """mmdet's AspectRatioBatchSampler that can continue after ``batches`` batches."""

    def set_position(self, batches: int) -> int | None:
        """Position the inner sampler and the two buckets; returns the epoch to continue in, or
        None when the inner sampler is not one this module can position."""
        sampler, size = self.sampler, self.batch_size
        wide = _aspect_lookup(sampler.dataset)
        if isinstance(sampler, ResumableInfiniteSampler):
            # the uninterrupted stream as plain (k, index) pairs: seeds only for what stays in a bucket
            fresh = enumerate(sampler.plain_stream(sampler.rank))
            buckets: list[list[Any]] = [[], []]
            consumed, _ = _fill_buckets(
                fresh, batches, size=size, buckets=buckets, wide=lambda item: wide(item[1])
            )
            sampler.set_position(consumed)
            self._aspect_ratio_buckets = [
                [sampler.seeded(index, k) for k, index in bucket] for bucket in buckets
            ]
            return 0
        if isinstance(sampler, ResumableDefaultSampler):
            return self._position_finite(sampler, batches, wide)
        return None

    def _position_finite(self, sampler: ResumableDefaultSampler, batches: int, wide: Any) -> int:
        epoch, remaining = 0, batches
        while True:
            indices = sampler.epoch_indices(epoch)
            buckets: list[list[int]] = [[], []]
            consumed, emitted = _fill_buckets(
                indices, remaining, size=self.batch_size, buckets=buckets, wide=wide
            )
            if emitted == remaining:  # stops inside the epoch's bucket phase
                sampler.set_position(epoch, consumed)
                self._aspect_ratio_buckets = buckets
                return epoch
            leftover = buckets[0] + buckets[1]  # the end-of-epoch flush of both buckets
            flushed = _flush_count(len(leftover), self.batch_size, drop_last=self.drop_last)
            left = remaining - emitted
            if left < flushed:  # stops inside the flush: keep what the flush still yields
                sampler.set_position(epoch, len(indices))
                self._aspect_ratio_buckets = [leftover[left * self.batch_size :], []]
                return epoch
            if emitted + flushed == 0:
                raise ValueError("the aspect-ratio batch sampler yields no batch in an epoch")
            epoch, remaining = epoch + 1, left - flushed


def position_batch_sampler(batch_sampler: Any, batches: int) -> int | None:
    """Make ``batch_sampler`` continue after this rank's first ``batches`` batches.

    Returns the epoch the data loader continues in (0 for infinite samplers), or None when the
    samplers are not ones this module knows; the caller then replays the data as mmengine does.
    """
    if isinstance(batch_sampler, ResumableAspectRatioBatchSampler):
        return batch_sampler.set_position(batches)
    if type(batch_sampler) is not BatchSampler:  # any other batch sampler: unknown grouping
        return None
    sampler, size = batch_sampler.sampler, batch_sampler.batch_size
    if isinstance(sampler, ResumableInfiniteSampler):
        sampler.set_position(batches * size)
        return 0
    if isinstance(sampler, ResumableDefaultSampler):
        per_epoch = len(batch_sampler)
        if per_epoch == 0:
            raise ValueError("the training data loader yields no batch in an epoch")
        epoch, within = divmod(batches, per_epoch)
        sampler.set_position(epoch, within * size)
        return epoch
    return None


def resumable_type(spec: Any) -> Any:
    """The resumable counterpart of a sampler ``type`` (a name, scoped name or class), else itself."""
    if isinstance(spec, str):
        name = spec.rpartition(".")[2]
        return RESUMABLE_TYPES.get(name, spec)
    for stock in (InfiniteSampler, DefaultSampler, AspectRatioBatchSampler):
        if spec is stock:
            return DATA_SAMPLERS.get(RESUMABLE_TYPES[stock.__name__])
    return spec


def _fill_buckets(
    indices: Iterable[Any],
    batches: int,
    *,
    size: int,
    buckets: list[list[Any]],
    wide: Callable[[Any], int],
) -> tuple[int, int]:
    """Run mmdet's bucket rule over ``indices`` until ``batches`` batches are full.

    Returns (indices consumed, batches emitted); ``buckets`` is left as the sampler would hold it.
    """
    consumed = emitted = 0
    if batches <= 0:
        return consumed, emitted
    for index in indices:
        consumed += 1
        bucket = buckets[wide(index)]
        bucket.append(index)
        if len(bucket) == size:
            bucket.clear()
            emitted += 1
            if emitted == batches:
                break
    return consumed, emitted


def _flush_count(leftover: int, size: int, *, drop_last: bool) -> int:
    """How many batches mmdet's end-of-pass flush yields from ``leftover`` indices."""
    count = 0
    while leftover > 0:
        if leftover <= size:
            return count + (0 if drop_last else 1)
        count, leftover = count + 1, leftover - size
    return count


def _aspect_lookup(dataset: Any) -> Callable[[int], int]:
    """Index -> bucket (0: taller than wide, 1: otherwise), from annotations, cached per index."""
    cache: dict[int, int] = {}

    def wide(index: int) -> int:
        if index not in cache:
            info = dataset.get_data_info(index)
            cache[index] = 0 if info["width"] < info["height"] else 1
        return cache[index]

    return wide
