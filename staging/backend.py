"""An mmengine file backend for ``gs://`` that reads through the node cache.

The first read of an object downloads it into the cache (same write protocol as staging: lock,
unique temp file, crc32c check, atomic rename); later reads, in this process or any other on the
node, hit local disk. The trial passes ``DataSpec.backend_args()``:

    LoadImageFromFile(backend_args={"backend": "gs_cached", "cache": "/mnt/node-cache/coco"})

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

from errors import StagingError
from staging.cache import Cache, write_atomic
from staging.paths import GS, REFS_DIR, parse_source, short_hash
from staging.spec import BACKEND_NAME

CACHE_ENV = "STAGING_CACHE"  # fallback when backend_args carry no "cache"
DEFAULT_CACHE = Path.home() / ".cache" / "mmdet-determined" / "gs"

_memo: dict[tuple[str, str], Path] = {}
_memo_lock = threading.Lock()
_registered = False


def fetch_url(url: str, cache_root: str | Path) -> Path:
    """Local path of ``gs://bucket/name`` in the cache, downloading it on the first read.

    Lookup order: in-process memo, then ``<cache>/refs/<urlhash>.json`` (written after the first
    download; no network), then object metadata + download.
    """
    key = (str(cache_root), url)
    with _memo_lock:
        hit = _memo.get(key)
    if hit is not None and hit.exists():
        return hit
    root = Path(cache_root)
    ref_file = root / REFS_DIR / f"{short_hash(url)}.json"
    path = _from_ref(root, ref_file)
    if path is None:
        path = _download(url, root)
        rel = str(path.relative_to(root))
        # advisory (a lost ref costs one metadata call, never a download): no fsync needed
        write_atomic(ref_file, json.dumps({"url": url, "path": rel}).encode(), durable=False)
    with _memo_lock:
        _memo[key] = path
    return path


def _from_ref(root: Path, ref_file: Path) -> Path | None:
    try:
        path = root / json.loads(ref_file.read_text())["path"]
    except (OSError, ValueError, KeyError):
        return None
    return path if path.exists() else None


def _download(url: str, root: Path) -> Path:
    from staging.sources import GcsSource

    ref = parse_source(url, field="gs:// path")
    if ref.kind != GS or not ref.prefix:
        raise StagingError(f"{url!r} is not a gs://bucket/object path")
    bucket_ref = parse_source(f"gs://{ref.bucket}", field="gs:// path")
    source = GcsSource(bucket_ref, workers=4)
    info = source.stat(ref.prefix)
    return Cache(root).ensure(info, source).path


def _backend_class():
    from mmengine.fileio.backends import BaseStorageBackend

    class GsCachedBackend(BaseStorageBackend):
        """Read ``gs://`` objects through the node cache (read-through; see module docstring)."""

        def __init__(self, cache: str | None = None, **_ignored) -> None:
            self.cache = cache or os.environ.get(CACHE_ENV) or str(DEFAULT_CACHE)

        def get(self, filepath) -> bytes:
            return fetch_url(str(filepath), self.cache).read_bytes()

        def get_text(self, filepath, encoding: str = "utf-8") -> str:
            return fetch_url(str(filepath), self.cache).read_text(encoding=encoding)

        @contextlib.contextmanager
        def get_local_path(self, filepath) -> Iterator[str]:
            yield str(fetch_url(str(filepath), self.cache))

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
