"""An mmengine file backend for ``gs://`` that reads through the node cache.

The first read of an object downloads it into the cache (same write protocol as staging: lock,
unique temp file, crc32c check, atomic rename); later reads, in this process or any other on the
node, hit local disk. The trial passes ``DataSpec.backend_args()``:

    LoadImageFromFile(backend_args={"backend": "gs_cached", "cache": "/mnt/node-cache/coco",
                                    "index": "/mnt/node-cache/coco/manifests/<key>-images.json"})

The index (written by staging) pins each image's generation, so the images read are the ones
listed together with the staged annotations, and warm reads need no network at all.

mmengine builds a new backend instance per call, so instances are cheap: clients, the cache and
the url -> path memo live at module level.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from errors import StagingError
from staging.cache import Cache
from staging.paths import GS, parse_source
from staging.sources import ObjectInfo
from staging.spec import BACKEND_NAME

CACHE_ENV = "STAGING_CACHE"  # fallback when backend_args carry no "cache"
DEFAULT_CACHE = Path.home() / ".cache" / "mmdet-determined" / "gs"

_memo: dict[tuple, tuple[tuple, str]] = {}  # (cache, index, url) -> (index version, path)
_indexes: dict[str, tuple[tuple, dict]] = {}  # index path -> (stat key, objects)
_sources: dict[tuple, Any] = {}  # (bucket, endpoint, pid) -> GcsSource
_lock = threading.Lock()
_registered = False


def fetch_url(url: str, cache_root: str | Path, index: str | Path | None = None) -> Path:
    """Local path of ``gs://bucket/name`` in the cache, downloading it on the first read.

    The object's generation comes from ``index`` (the listing staging pinned beside the staged
    annotations; no network) or, for a URL it does not hold, from GCS (one metadata call per
    read). The cache path is keyed by URL + generation + crc32c, so a re-uploaded object is
    never served from an older copy.
    """
    return Path(_local_path(url, str(cache_root), str(index) if index else ""))


def read_url(url: str, cache_root: str | Path, index: str | Path | None = None) -> bytes:
    """The bytes of ``url`` through the cache (re-fetched if its cached file vanished).

    A warm read is one ``stat`` of the index (has staging replaced it?), a dict lookup and the
    file read: within a few percent of mmengine's local backend (``invoke bench staging``).
    """
    root, idx = str(cache_root), str(index) if index else ""
    try:
        with open(_local_path(url, root, idx), "rb") as f:
            return f.read()
    except FileNotFoundError:  # removed from the cache behind our back: fetch it again
        with _lock:
            _memo.clear()
        with open(_local_path(url, root, idx), "rb") as f:
            return f.read()


def _local_path(url: str, root: str, index: str) -> str:
    if index:
        version, objects = _index(index)
        key = (root, index, url)
        hit = _memo.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        info = _pinned(url, objects.get(url))
    else:
        version, info = (), None
    if info is None:  # not pinned: ask GCS for the current generation (never stale)
        info = _source(url).stat(_object_name(url))
    path = str(Cache(Path(root)).ensure(info, _source(url)).path)
    if index and version:
        with _lock:
            _memo[(root, index, url)] = (version, path)
    return path


def _object_name(url: str) -> str:
    ref = parse_source(url, field="gs:// path")
    if ref.kind != GS or not ref.prefix:
        raise StagingError(f"{url!r} is not a gs://bucket/object path")
    return ref.prefix


def _source(url: str):
    from staging.sources import GcsSource

    bucket = url[len("gs://") :].split("/", 1)[0]
    # a forked loader worker gets its own client; so does another endpoint (emulator tests)
    key = (bucket, os.environ.get("STORAGE_EMULATOR_HOST", ""), os.getpid())
    source = _sources.get(key)
    if source is None:
        source = GcsSource(parse_source(f"gs://{bucket}", field="gs:// path"), workers=4)
        with _lock:
            _sources[key] = source
    return source


def _pinned(url: str, row: list | None) -> ObjectInfo | None:
    """The ObjectInfo of an index row ``[generation, crc32c, size]`` (None: not listed)."""
    if row is None:
        return None
    generation, crc32c, size = row
    return ObjectInfo(
        relpath=_object_name(url),
        url=url,
        size=size,
        ident=f"generation={generation},crc32c={crc32c}",
        crc32c=crc32c,
        generation=generation,
    )


def _index(index: str) -> tuple[tuple, dict]:
    """(version, objects) of the index, re-read whenever staging replaced the file (one stat
    per read); ((), {}) when there is none."""
    try:
        st = os.stat(index)
    except OSError:
        return (), {}
    version = (st.st_ino, st.st_mtime_ns, st.st_size)
    entry = _indexes.get(index)
    if entry is None or entry[0] != version:
        try:
            with open(index, "rb") as f:
                entry = (version, json.load(f)["objects"])
        except (OSError, ValueError, KeyError, TypeError):
            return (), {}
        with _lock:
            _indexes[index] = entry
    return entry


def _backend_class():
    from mmengine.fileio.backends import BaseStorageBackend

    class GsCachedBackend(BaseStorageBackend):
        """Read ``gs://`` objects through the node cache (read-through; see module docstring)."""

        def __init__(self, cache: str | None = None, index: str | None = None, **_ignored) -> None:
            self.cache = cache or os.environ.get(CACHE_ENV) or str(DEFAULT_CACHE)
            self.index = index

        def get(self, filepath) -> bytes:
            return read_url(str(filepath), self.cache, self.index)

        def get_text(self, filepath, encoding: str = "utf-8") -> str:
            return self.get(filepath).decode(encoding)

        @contextlib.contextmanager
        def get_local_path(self, filepath) -> Iterator[str]:
            yield str(fetch_url(str(filepath), self.cache, self.index))

        def join_path(self, filepath, *filepaths: str) -> str:
            return "/".join([str(filepath).rstrip("/"), *(p.strip("/") for p in filepaths)])

    return GsCachedBackend


def register() -> None:
    """Register the backend with mmengine as ``gs_cached`` for the ``gs`` prefix (idempotent)."""
    global _registered
    if _registered:
        return
    from mmengine.fileio import register_backend

    register_backend(BACKEND_NAME, _backend_class(), force=True, prefixes="gs")
    _registered = True
