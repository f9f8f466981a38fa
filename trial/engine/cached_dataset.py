"""``NodeCachedCocoDataset``: mmdet's ``CocoDataset`` whose parsed annotations are built once per
node and memory-mapped by every rank (trial/engine/anncache.py).

It is a ``CocoDataset`` (a subclass: isinstance checks, ``METAINFO``, ``get_cat_ids``, wrappers
and samplers see no difference) whose ``full_init`` maps the cache entry for its inputs instead of
parsing the JSON, or, on a miss, runs mmdet's own ``full_init`` once (under the entry's lock) and
caches what it produced: ``data_bytes``/``data_address`` and every attribute it set
(``cat_ids``, ``cat2label``, ``cat_img_map``; a big one loads on first use). Pickling (a spawned
DataLoader worker, a deepcopy) passes the entry by its path, not its bytes.

It falls back to plain mmdet, with one log line, when there is nothing to share: no cache folder,
``serialize_data=False`` (the list then lives in memory by request), a ``proposal_file``, or an
annotation file that is not a local file.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS

from trial.engine.anncache import Parsed, annotation_identity, cache_path, load_or_build

log = logging.getLogger("trial.anncache")

# Init arguments that do not shape data_list (ann_file enters the key by its content instead).
NOT_SHAPING = frozenset(
    {"pipeline", "lazy_init", "max_refetch", "serialize_data", "ann_file", "backend_args"}
)
INIT_STATE = frozenset({"data_list", "data_bytes", "data_address", "_fully_initialized"})
VERSIONED = ("mmdet", "mmengine", "pycocotools", "numpy")


class NodeCachedMixin:
    """Put before an mmengine ``BaseDataset`` subclass: its parsed annotations are cached per node."""

    def __init__(self, *args: Any, cache_dir: str | None = None, **kwargs: Any) -> None:
        self._anncache_root = cache_dir
        self._anncache_args = {"args": list(args)} | {
            k: v for k, v in kwargs.items() if k not in NOT_SHAPING
        }
        self._anncache_entry: Parsed | None = None
        self._anncache_lazy: dict[str, Any] = {}
        super().__init__(*args, **kwargs)

    def full_init(self) -> None:
        if self._fully_initialized:
            return
        reason = self._uncached_reason()
        if reason:
            log.info("parsed annotations of %s are not cached: %s", self.ann_file, reason)
            return super().full_init()
        started = time.perf_counter()
        key = self.cache_key()
        final = cache_path(self._anncache_root, key, self.ann_file)
        self._adopt(load_or_build(final, key, self._parse, root=Path(self._anncache_root)))
        log.info("parsed annotations of %s: %d entries from %s in %.2f s", self.ann_file,
                 len(self.data_address), final, time.perf_counter() - started)  # fmt: skip

    def cache_key(self) -> str:
        """Everything that shapes ``data_list``, as canonical JSON (the entry's name hashes it)."""
        fields = {
            "classes": [f"{c.__module__}.{c.__qualname__}" for c in type(self).__mro__],
            "versions": {name: version(name) for name in VERSIONED},
            "annotations": annotation_identity(self.ann_file),
            "args": self._anncache_args,
            "resolved": {
                "data_root": self.data_root,
                "data_prefix": self.data_prefix,
                "metainfo": self._metainfo,
                "filter_cfg": self.filter_cfg,
                "indices": self._indices,
                "test_mode": self.test_mode,
            },
        }
        return json.dumps(fields, sort_keys=True, default=repr)

    def _uncached_reason(self) -> str:
        if not self._anncache_root:
            return "no cache folder (cache_dir)"
        if not self.serialize_data:
            return "serialize_data=False keeps data_list in memory"
        if getattr(self, "proposal_file", None):
            return "a proposal_file is merged into the list"
        if not os.path.isfile(self.ann_file):
            return "the annotation file is not a local file"
        return ""

    def _parse(self) -> Parsed:
        """mmdet's own full_init, and what it produced."""
        before = dict(self.__dict__)
        with _gc_paused():
            super().full_init()
        attrs = {
            k: v
            for k, v in self.__dict__.items()
            if k not in INIT_STATE and (k not in before or before[k] is not v)
        }
        return Parsed(self.data_bytes, self.data_address, attrs)

    def _adopt(self, parsed: Parsed) -> None:
        for name, value in parsed.attrs.items():
            setattr(self, name, value)
        for name in parsed.lazy:  # a builder drops its own copy too: it loads on first use
            self.__dict__.pop(name, None)
        self._anncache_lazy = dict(parsed.lazy)
        self.data_list = []  # as mmengine leaves it once serialized
        self.data_bytes, self.data_address = parsed.data_bytes, parsed.data_address
        self._anncache_entry = parsed if parsed.path is not None else None
        self._fully_initialized = True

    def __getattr__(self, name: str) -> Any:
        lazy = self.__dict__.get("_anncache_lazy")
        if lazy and name in lazy:
            value = lazy.pop(name).load()
            setattr(self, name, value)
            return value
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if self._is_mapped(state):  # the entry pickles as its path; unpickling maps it again
            del state["data_bytes"], state["data_address"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        entry = state.get("_anncache_entry")
        if entry is not None and "data_bytes" not in state:
            self.data_bytes, self.data_address = entry.data_bytes, entry.data_address

    @staticmethod
    def _is_mapped(state: dict) -> bool:
        entry = state.get("_anncache_entry")
        return (
            entry is not None
            and state.get("data_bytes") is entry.data_bytes
            and state.get("data_address") is entry.data_address
        )


@DATASETS.register_module()
class NodeCachedCocoDataset(NodeCachedMixin, CocoDataset):
    """mmdet's CocoDataset with its parsed annotations shared per node (``cache_dir``)."""


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic GC while millions of long-lived objects are made (mmdet's parse makes no
    cycles; the collector would rescan them all, again and again): same result, less time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
