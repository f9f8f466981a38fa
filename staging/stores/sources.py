"""Where bytes come from: the Source protocol, the local/NFS directory, and the store registry.

A source lists objects with their identity (size+mtime on disk; generation+crc32c on GCS;
ETag+size on S3) using metadata calls only, and streams one object into a writer from a byte
offset (one attempt; the cache owns retries, resume and verification). Each object store is one
module (STORE_MODULES: staging/stores/gcs.py, staging/stores/s3.py) with a ``SOURCE`` class and an
``is_transient_error``; the cache, the view, locks, the group commit, manifests and the
read-through index are shared by all of them.
"""

from __future__ import annotations

import errno
import importlib
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from errors import StagingError
from staging.paths import GS, S3, SourceRef, check_relpath, safe_join

CHUNK = 1 << 20
CONNECT_TIMEOUT_S = 5.0  # per request; a blackholed endpoint fails in seconds, not minutes
READ_TIMEOUT_S = 60.0
METADATA_RETRY_S = 8.0  # listing/metadata calls retry transient errors this long in all
STORE_MODULES = {
    GS: "staging.stores.gcs",
    S3: "staging.stores.s3",
}  # scheme -> module with a SOURCE class


@dataclass(frozen=True)
class ObjectInfo:
    """One source object: its path below the source, URL, size and identity (the cache key)."""

    relpath: str
    url: str
    size: int
    ident: str
    crc32c: str | None = None  # base64 big-endian, as GCS reports it; None on disk (computed)
    generation: int | None = None
    mode: int | None = None  # permission bits on disk (the cached copy keeps at most these)
    etag: str | None = None  # S3: the ETag reads are pinned to (If-Match)
    version: str | None = None  # S3: the version id, where the bucket is versioned
    verifiable: bool = False  # the source will vet the whole object (a resumed one too)

    def row(self) -> list:
        """The read-through index's row for this object (staging/backend.py reads it back)."""
        return [self.size, self.ident, self.crc32c, self.generation, self.etag, self.version,
                self.verifiable]  # fmt: skip

    @classmethod
    def from_row(cls, relpath: str, url: str, row: list) -> ObjectInfo:
        size, ident, crc32c, generation, etag, version, verifiable = row
        return cls(relpath, url, size, ident, crc32c=crc32c, generation=generation, etag=etag,
                   version=version, verifiable=verifiable)  # fmt: skip


class Writer(Protocol):
    """Where a source streams an object (staging/stores/fetch.py's hashing writer)."""

    expected: tuple[str, str] | None  # (algorithm, value) the source vouches for, once known

    def write(self, data: bytes | memoryview, /) -> int | None: ...

    def expect(self, algorithm: str, value: str) -> None:
        """The source's checksum of the whole object (crc32c/crc32/crc64nvme/sha1/sha256: base64
        of the big-endian digest; md5: hex), verified once every byte is in."""


class Source(Protocol):
    ref: SourceRef

    def list_dir(self, reldir: str) -> list[ObjectInfo]: ...

    def exists_dir(self, reldir: str) -> bool: ...

    def stat(self, relpath: str) -> ObjectInfo: ...

    def read_into(self, info: ObjectInfo, writer: Writer, *, start: int) -> None: ...


def open_source(ref: SourceRef, *, workers: int = 16) -> Source:
    """The Source for ``ref``; raises StagingError when a local path does not exist."""
    if ref.remote:
        return importlib.import_module(STORE_MODULES[ref.kind]).SOURCE(ref, workers=workers)
    assert ref.path is not None
    if not ref.path.is_dir():
        raise StagingError(
            f"data.source {ref.url} does not exist or is not a directory; "
            "point it at a COCO 2017 folder (annotations/, train2017/, val2017/)"
        )
    return LocalSource(ref)


class LocalSource:
    """A directory on local disk or NFS. Symlinks inside it are followed only while they
    resolve inside it: one that leads out (``-> /etc/shadow``) is refused, naming the link."""

    def __init__(self, ref: SourceRef) -> None:
        assert ref.path is not None
        self.ref = ref
        self.root: Path = ref.path
        self._real_root = os.path.realpath(ref.path)
        self._inside_dirs: set[str] = set()

    def stat(self, relpath: str) -> ObjectInfo:
        """Metadata for one file (size and mtime_ns are its identity)."""
        return self._info(relpath, self._path(relpath).stat())

    def _info(self, relpath: str, st: os.stat_result) -> ObjectInfo:
        return ObjectInfo(
            relpath=relpath,
            url=self.ref.object_url(relpath),
            size=st.st_size,
            ident=f"size={st.st_size},mtime_ns={st.st_mtime_ns}",
            mode=stat.S_IMODE(st.st_mode),
        )

    def _path(self, relpath: str) -> Path:
        """``relpath`` under the root; StagingError if it (through a symlink) leads outside."""
        path = safe_join(self.root, relpath, what=self.ref.url)
        self._check_inside(path, relpath)
        return path

    def _open(self, relpath: str) -> int:
        """Open ``relpath`` for reading, refusing a path that leads out of the source: its
        folder is resolved once per process, the file itself opened with O_NOFOLLOW (only a
        symlink is resolved and checked)."""
        path = os.path.join(self._real_root, check_relpath(relpath, what=self.ref.url))
        folder = os.path.dirname(path)
        if folder not in self._inside_dirs:
            self._check_inside(folder, relpath.rpartition("/")[0] or ".")
            self._inside_dirs.add(folder)
        try:
            return os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as err:
            if err.errno != errno.ELOOP:
                raise
        self._check_inside(path, relpath)
        return os.open(path, os.O_RDONLY)

    def _check_inside(self, path: str | Path, relpath: str) -> None:
        real = os.path.realpath(path)
        if real != self._real_root and not real.startswith(self._real_root + os.sep):
            raise StagingError(
                f"{self.ref.object_url(relpath)} is a symlink to {real}, outside data.source "
                f"{self.ref.url}; copy the file into the source or remove the link"
            )

    def list_dir(self, reldir: str) -> list[ObjectInfo]:
        """Every regular file below ``reldir`` (empty when the folder does not exist)."""
        out: list[ObjectInfo] = []
        self._walk(self._path(reldir), reldir.rstrip("/"), out)
        return out

    def _walk(self, folder: Path, rel_dir: str, out: list[ObjectInfo]) -> None:
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            rel = check_relpath(f"{rel_dir}/{entry.name}", what=self.ref.url)
            if entry.is_symlink():
                self._check_inside(entry.path, rel)
                if entry.is_dir():
                    continue  # a folder link inside the source: not walked (no loops)
            if entry.is_dir(follow_symlinks=False):
                self._walk(Path(entry.path), rel, out)
            elif entry.is_file():
                out.append(self._info(rel, entry.stat()))

    def exists_dir(self, reldir: str) -> bool:
        return self._path(reldir).is_dir()

    def read_into(self, info: ObjectInfo, writer: Writer, *, start: int) -> None:
        """Copy the file from byte ``start`` into ``writer``; refuse it if it changed meanwhile."""
        with os.fdopen(self._open(info.relpath), "rb", buffering=0) as src:
            src.seek(start)
            while chunk := src.read(CHUNK):
                writer.write(chunk)
            now = os.fstat(src.fileno())
        if self._info(info.relpath, now).ident != info.ident:
            raise StagingError(
                f"{info.url} changed while it was being copied; rerun when it is stable"
            )


def short_reason(err: BaseException) -> str:
    """A short reason: ``[Errno 111] Connection refused`` from a urllib3 chain, else the type."""
    import re

    found = re.search(r"\[Errno -?\d+\] [^'\")]+", str(err))
    if found:
        return found.group(0)
    first = str(err).splitlines()[0][:120] if str(err) else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def is_transient(err: BaseException) -> bool:
    """True for errors worth a retry: dropped connections, timeouts, bad checksums, and what each
    store module that is in use calls transient (429/5xx, its client's connection errors)."""
    import requests
    import urllib3.exceptions

    from errors import CorruptDataError

    transient = (
        ConnectionError,
        TimeoutError,
        requests.exceptions.RequestException,
        urllib3.exceptions.HTTPError,
        CorruptDataError,
    )
    if isinstance(err, transient):
        return True
    for name in STORE_MODULES.values():
        module = sys.modules.get(name)  # a store not imported raised nothing of its own
        if module is not None and module.is_transient_error(err):
            return True
    cause = err.__cause__ or err.__context__
    return cause is not None and cause is not err and is_transient(cause)
