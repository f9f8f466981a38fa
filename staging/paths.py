"""Pure path logic: parse a source URL, check object names, map an object to its cache path.

No I/O here. Every function that turns untrusted names into paths raises StagingError when the
result would leave its root (``..``, absolute names, empty segments).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from errors import ConfigError, StagingError

GS = "gs"
S3 = "s3"
LOCAL = "local"
STORES = (GS, S3)  # object stores, each one module (staging/stores/gcs.py, staging/stores/s3.py)
OBJECTS_DIR = "objects"
LOCKS_DIR = ".locks"
DERIVED_DIR = "derived"
MANIFESTS_DIR = "manifests"
INCOMPLETE = ".incomplete"
LOCK_STRIPES = 1 << 16  # bytes of one record-lock file: rarely shared, free to have many


@dataclass(frozen=True)
class SourceRef:
    """Where COCO lives: a local/NFS directory, ``gs://bucket/prefix`` or ``s3://bucket/prefix``."""

    kind: str
    url: str
    bucket: str = ""
    prefix: str = ""
    path: Path | None = None

    def object_url(self, relpath: str) -> str:
        """The URL of ``relpath`` below this source (used as the cache key's first half)."""
        return f"{self.url.rstrip('/')}/{relpath}"

    @property
    def remote(self) -> bool:
        """True for an object store (``gs://``, ``s3://``): listed, pinned, read through."""
        return self.kind in STORES

    def object_name(self, relpath: str) -> str:
        """The object name (key) of ``relpath``, bucket-relative."""
        return f"{self.prefix}/{relpath}" if self.prefix else relpath


def parse_source(url: str, *, field: str = "data.source") -> SourceRef:
    """Parse ``gs://bucket/prefix``, ``s3://bucket/prefix`` or a local path into a SourceRef;
    raise ConfigError if bad."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(
            f"{field} is empty; set it to a local path, gs://bucket/prefix or s3://bucket/prefix"
        )
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme in STORES:
        rest = url[len(scheme) + 3 :].rstrip("/")
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise ConfigError(f"{field}={url!r} has no bucket; write {scheme}://bucket/prefix")
        if prefix:
            check_relpath(prefix, what=f"{field}={url!r}")
        url = f"{scheme}://{bucket}/{prefix}".rstrip("/")
        return SourceRef(scheme, url, bucket=bucket, prefix=prefix)
    if scheme:
        raise ConfigError(f"{field}={url!r}: unsupported scheme; use a local path, gs:// or s3://")
    path = Path(url).expanduser().absolute()
    return SourceRef(LOCAL, str(path), path=path)


def check_relpath(name: str, *, what: str) -> str:
    """Return ``name`` if it is a clean relative POSIX path, else raise StagingError naming it."""
    parts = PurePosixPath(name).parts
    bad = (
        not name
        or name.startswith("/")
        or "\\" in name
        or "\x00" in name
        or any(p in ("..", ".") for p in name.split("/"))
        or "//" in name
        or not parts
    )
    if bad:
        raise StagingError(
            f"unsafe object name {name!r} in {what}: names must be relative without '..'; "
            "fix or remove that object"
        )
    return name


def safe_join(root: Path, relpath: str, *, what: str) -> Path:
    """Join ``relpath`` under ``root``; raise StagingError if the result would leave ``root``."""
    check_relpath(relpath, what=what)
    path = Path(os.path.normpath(root / relpath))
    if os.path.commonpath([path, os.path.normpath(root)]) != os.path.normpath(root):
        raise StagingError(f"object name {relpath!r} in {what} leaves {root}; remove it")
    return path


def short_hash(*parts: str, n: int = 16) -> str:
    """A short stable hex digest of ``parts`` (joined with NUL)."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:n]


def object_path(cache_root: Path, url: str, ident: str) -> Path:
    """The one mapping from (source object URL, identity) to its final path in the cache.

    Layout: ``<cache>/objects/<hash of the URL's folder>/<identhash>-<basename>``: one cache
    folder per source folder (no directory per object: creating directories is slow), and a new
    generation or mtime gets a new name, so readers of the old one are never disturbed.
    """
    folder, _, base = url.rstrip("/").rpartition("/")
    check_relpath(base, what=url)
    return cache_root / OBJECTS_DIR / short_hash(folder) / f"{short_hash(url, ident)}-{base}"


def lock_path(cache_root: Path, final: Path) -> Path:
    """The lock stripe guarding writers of ``final`` (best effort; correctness never needs it).

    Each object's key is hashed into one of LOCK_STRIPES stripes (a byte of
    ``.locks/stripes``, staging/writers.py), so locks stay bounded (COCO train has 118k objects);
    two objects rarely share a stripe, and sharing one only makes a writer wait.
    """
    stripe = int(short_hash(str(final)), 16) % LOCK_STRIPES
    return cache_root / LOCKS_DIR / f"{stripe:04x}.lock"


def derived_path(cache_root: Path, key: str, name: str) -> Path:
    """Where a derived file (a subset JSON, an extracted archive) lives, keyed by its inputs."""
    return cache_root / DERIVED_DIR / short_hash(key) / name


def human_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (decimal units, like the summary line promises)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
