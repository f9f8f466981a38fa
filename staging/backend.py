"""An mmengine file backend for ``gs://`` and ``s3://`` that reads through the node cache.

The first read of an object downloads it into the cache (same write protocol as staging: lock,
unique temp file, crc32c check, atomic rename); later reads, in this process or any other on the
node, hit local disk. The trial passes ``DataSpec.backend_args()``:

    LoadImageFromFile(backend_args={"backend": "gs_cached", "cache": "/mnt/node-cache/coco",
                                    "index": "/mnt/node-cache/coco/manifests/<key>-images.json"})

(``s3_cached`` for ``s3://``: the same class and cache.) The index (written by staging) pins each
image's version (GCS generation; S3 ETag, read with If-Match), so the images read are the ones
listed together with the staged annotations, and warm reads need no network at all.

mmengine builds a new backend instance per call, so instances are cheap: clients, the cache and
the url -> path memo live at module level.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from errors import StagingError
from staging.cache import Cache, Fetched, Pending, write_atomic
from staging.durable import Committer
from staging.paths import parse_source
from staging.spec import BACKEND_NAMES
from staging.stores.sources import ObjectInfo, open_source

CACHE_ENV = "STAGING_CACHE"  # fallback when backend_args carry no "cache"
DEFAULT_CACHE = Path.home() / ".cache" / "mmdet-determined" / "gs"

INDEX_RECHECK_S = 1.0  # how often a reader looks whether another process re-staged
INDEX_VERSION = 2  # rows are ObjectInfo.row(); an index of another version is not read
ENDPOINT_ENVS = ("STORAGE_EMULATOR_HOST", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")

_memo: dict[str, _Pins] = {}  # index path -> what was loaded from it
_sources: dict[tuple, Any] = {}  # (scheme, bucket, endpoints, pid) -> its store's Source
_committers: dict[int, Committer] = {}  # pid -> its committer (never closed: a daemon thread)
_lock = threading.Lock()
_registered = False


def _after_fork() -> None:
    global _lock
    _lock = threading.Lock()  # a copy taken while a parent thread held it would stay held


os.register_at_fork(after_in_child=_after_fork)


class _Pins:
    """One loaded index: its file version, the pinned rows and a url -> cached path memo (a
    new index version gets a new _Pins, so the memo can never outlive its pins)."""

    __slots__ = ("checked", "objects", "paths", "version")

    def __init__(self, version: tuple, objects: dict, checked: float) -> None:
        self.version, self.objects, self.checked = version, objects, checked
        self.paths: dict[str, str] = {}


def fetch_url(url: str, cache_root: str | Path, index: str | Path | None = None) -> Path:
    """Local path of ``gs://bucket/name`` (or ``s3://``) in the cache, downloading it on the
    first read.

    The object's version comes from ``index`` (the listing staging pinned beside the staged
    annotations; no network) or, for a URL it does not hold, from the store (one metadata call
    per read). The cache path is keyed by URL + identity (generation + crc32c; ETag + size), so
    a re-uploaded object is never served from an older copy.
    """
    return Path(_local_path(url, str(cache_root), str(index) if index else ""))


def read_url(url: str, cache_root: str, index: str = "") -> bytes:
    """The bytes of ``url`` through the cache (re-fetched if its cached file vanished).

    A warm read is two dict lookups and the file read (the index file is re-checked at most
    every INDEX_RECHECK_S; staging in this process invalidates it at once).
    """
    pins = _memo.get(index) if index else None  # the hot path inlines _pins()
    if pins is None or time.monotonic() - pins.checked >= INDEX_RECHECK_S:
        pins = _pins(index) if index else None
    path = pins.paths.get(url) if pins is not None else None
    if path is None:  # cold: download; its durable flush + rename go on in the background
        found = _ensure(url, cache_root, pins)
        if isinstance(found, Pending):
            return found.read_bytes()
        path = str(found.path)
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:  # removed from the cache behind our back (or not renamed yet)
        if pins is not None:
            pins.paths.pop(url, None)
        with open(_local_path(url, cache_root, index), "rb") as f:
            return f.read()


def forget_index(index: str | Path) -> None:
    """Drop what this process loaded from ``index`` (staging just rewrote it)."""
    with _lock:
        _memo.pop(str(index), None)


def _local_path(url: str, root: str, index: str) -> str:
    found = _ensure(url, root, _pins(index) if index else None, handed=False)
    return str(found.path)  # type: ignore[union-attr]


def _ensure(url: str, root: str, pins: _Pins | None, *, handed: bool = True) -> Fetched | Pending:
    """The object in the cache: a hit, or a download (Pending while its commit is underway)."""
    info = _pinned(url, pins.objects.get(url)) if pins is not None else None
    if info is None:  # not pinned: ask the store for the current version (never stale)
        info = _source(url).stat(_object_name(url))
    committer = _committer() if handed else None
    found = Cache(Path(root)).ensure(info, _source(url), committer=committer)
    if pins is not None and url in pins.objects:
        pins.paths[url] = str(found.final if isinstance(found, Pending) else found.path)
    return found


def _committer() -> Committer:
    """This process's committer (a forked loader worker makes its own): a download returns its
    bytes at once and the flush + rename happen on that thread, batched across downloads."""
    committer = _committers.get(os.getpid())
    if committer is None:
        with _lock:
            committer = _committers.setdefault(os.getpid(), Committer())
    return committer


def _pins(index: str) -> _Pins | None:
    """The index as loaded, re-read when its file changed (checked every INDEX_RECHECK_S)."""
    now = time.monotonic()
    pins = _memo.get(index)
    if pins is not None and now - pins.checked < INDEX_RECHECK_S:
        return pins
    try:
        st = os.stat(index)
    except OSError:
        return None
    version = (st.st_ino, st.st_mtime_ns, st.st_size)
    if pins is not None and pins.version == version:
        pins.checked = now
        return pins
    try:
        with open(index, "rb") as f:
            doc = json.load(f)
        if doc.get("version") != INDEX_VERSION:
            return None  # written by another staging version: unpinned reads until re-staged
        pins = _Pins(version, doc["objects"], now)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    with _lock:
        _memo[index] = pins
    return pins


def _object_name(url: str) -> str:
    ref = parse_source(url, field="image path")
    if not ref.remote or not ref.prefix:
        raise StagingError(f"{url!r} is not a gs://bucket/object or s3://bucket/object path")
    return ref.prefix


def _source(url: str):
    scheme, _, rest = url.partition("://")
    bucket = rest.split("/", 1)[0]
    # a forked loader worker gets its own client; so does another endpoint (emulator tests)
    key = (scheme, bucket, *(os.environ.get(e, "") for e in ENDPOINT_ENVS), os.getpid())
    source = _sources.get(key)
    if source is None:
        source = open_source(parse_source(f"{scheme}://{bucket}", field="image path"), workers=4)
        with _lock:
            _sources[key] = source
    return source


def _pinned(url: str, row: list | None) -> ObjectInfo | None:
    """The ObjectInfo of an index row (ObjectInfo.row(); None: not listed)."""
    if row is None:
        return None
    return ObjectInfo.from_row(_object_name(url), url, row)


def _backend_class():
    from mmengine.fileio.backends import BaseStorageBackend

    class GsCachedBackend(BaseStorageBackend):
        """Read ``gs://``/``s3://`` objects through the node cache (see module docstring)."""

        def __init__(self, cache: str | None = None, index: str | None = None, **_ignored) -> None:
            self.cache = str(cache or os.environ.get(CACHE_ENV) or DEFAULT_CACHE)
            self.index = str(index) if index else ""

        def get(self, filepath) -> bytes:
            return read_url(filepath if isinstance(filepath, str) else str(filepath),
                            self.cache, self.index)  # fmt: skip

        def get_text(self, filepath, encoding: str = "utf-8") -> str:
            return self.get(filepath).decode(encoding)

        @contextlib.contextmanager
        def get_local_path(self, filepath) -> Iterator[str]:
            yield str(fetch_url(str(filepath), self.cache, self.index))

        def join_path(self, filepath, *filepaths: str) -> str:
            return "/".join([str(filepath).rstrip("/"), *(p.strip("/") for p in filepaths)])

    return GsCachedBackend


def register() -> None:
    """Register the backend with mmengine as ``gs_cached`` for the ``gs`` prefix and
    ``s3_cached`` for ``s3`` (idempotent)."""
    global _registered
    if _registered:
        return
    from mmengine.fileio import register_backend

    backend = _backend_class()
    for scheme, name in BACKEND_NAMES.items():
        register_backend(name, backend, force=True, prefixes=scheme)
    _registered = True


def write_index(path: Path, listings: dict[str, list[ObjectInfo]]) -> None:
    """Pin every listed image (URL -> ObjectInfo.row(): size, identity, checksum, generation or
    ETag/version) for the read-through backend, so training reads the object versions listed
    with these annotations; rewritten only on change."""
    objects = {i.url: i.row() for infos in listings.values() for i in infos}
    data = json.dumps({"version": INDEX_VERSION, "objects": objects}, sort_keys=True).encode()
    with contextlib.suppress(OSError):
        if path.read_bytes() == data:
            return
    write_atomic(path, data)
    forget_index(path)  # readers in this process see the new pins at once
