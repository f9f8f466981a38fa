"""Where bytes come from: a local/NFS directory or a GCS bucket (google-cloud-storage).

A source lists objects with their identity (size+mtime on disk; generation+crc32c on GCS) using
metadata calls only, and streams one object into a writer from a byte offset (one attempt; the
cache owns retries, resume and verification).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import stat
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from errors import StagingError
from staging.paths import GS, SourceRef, check_relpath, safe_join

CHUNK = 1 << 20
ANON_PROJECT = "test"
CONNECT_TIMEOUT_S = 5.0  # per request; a blackholed endpoint fails in seconds, not minutes
READ_TIMEOUT_S = 60.0
METADATA_RETRY_S = 8.0  # listing/metadata calls retry transient errors this long in all


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


class Writer(Protocol):
    def write(self, data: bytes | memoryview, /) -> int | None: ...


class Source(Protocol):
    ref: SourceRef

    def list_dir(self, reldir: str) -> list[ObjectInfo]: ...

    def exists_dir(self, reldir: str) -> bool: ...

    def read_into(self, info: ObjectInfo, writer: Writer, *, start: int) -> None: ...


def open_source(ref: SourceRef, *, workers: int = 16) -> Source:
    """The Source for ``ref``; raises StagingError when a local path does not exist."""
    if ref.kind == GS:
        return GcsSource(ref, workers=workers)
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


class GcsSource:
    """``gs://bucket/prefix`` through google-cloud-storage (ADC, or the emulator's host)."""

    def __init__(self, ref: SourceRef, *, workers: int = 16) -> None:
        self.ref = ref
        self.client = get_client(pool_size=max(workers, 10))
        self.bucket = self.client.bucket(ref.bucket)
        self._calls = {"timeout": (CONNECT_TIMEOUT_S, READ_TIMEOUT_S), "retry": _metadata_retry()}

    def _info(self, blob) -> ObjectInfo:
        name: str = blob.name
        relpath = name[len(self.ref.prefix) + 1 :] if self.ref.prefix else name
        check_relpath(relpath, what=f"gs://{self.ref.bucket}/{name}")
        return ObjectInfo(
            relpath=relpath,
            url=self.ref.object_url(relpath),
            size=int(blob.size or 0),
            ident=f"generation={blob.generation},crc32c={blob.crc32c}",
            crc32c=blob.crc32c,
            generation=blob.generation,
        )

    def list_dir(self, reldir: str) -> list[ObjectInfo]:
        """Every object below ``reldir/`` (metadata only; pages of up to 1000)."""
        prefix = self.ref.object_name(reldir).rstrip("/") + "/"
        with gcs_errors(self.ref, reldir, listing=True):
            blobs = list(self.client.list_blobs(self.ref.bucket, prefix=prefix, **self._calls))
        return sorted(
            (self._info(b) for b in blobs if not b.name.endswith("/")), key=lambda i: i.relpath
        )

    def exists_dir(self, reldir: str) -> bool:
        prefix = self.ref.object_name(reldir).rstrip("/") + "/"
        with gcs_errors(self.ref, reldir, listing=True):
            blobs = self.client.list_blobs(
                self.ref.bucket, prefix=prefix, max_results=1, **self._calls
            )
            return any(True for _ in blobs)

    def stat(self, relpath: str) -> ObjectInfo:
        """Metadata for one object; StagingError when it does not exist."""
        with gcs_errors(self.ref, relpath):
            blob = self.bucket.get_blob(self.ref.object_name(relpath), **self._calls)
        if blob is None:
            raise StagingError(
                f"missing object {self.ref.object_url(relpath)}; check data.source and the bucket"
            )
        return self._info(blob)

    def read_into(self, info: ObjectInfo, writer: Writer, *, start: int) -> None:
        """Download the object's pinned generation from byte ``start`` (no client retries)."""
        blob = self.bucket.blob(self.ref.object_name(info.relpath), generation=info.generation)
        with gcs_errors(self.ref, info.relpath, generation=info.generation):
            blob.download_to_file(
                writer, start=start or None, checksum=None, raw_download=True, retry=None,
                timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
            )  # fmt: skip


def _metadata_retry():
    """google-cloud-storage's own retry policy, bounded to METADATA_RETRY_S in all."""
    with quiet_google_imports():
        from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_timeout(METADATA_RETRY_S)


def endpoint() -> str:
    """The GCS endpoint in use (the emulator's when STORAGE_EMULATOR_HOST is set)."""
    return os.environ.get("STORAGE_EMULATOR_HOST") or "https://storage.googleapis.com"


_client_lock = threading.Lock()


@contextlib.contextmanager
def quiet_google_imports() -> Iterator[None]:
    """Hide google-api-core's import-time FutureWarning about Python end-of-life dates: it is
    not about the user's data and would break our one-line error output."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


# google-cloud-storage 3.x fetches each bucket's metadata in a background thread on a client's first
# call, only to label OpenTelemetry spans: an extra GET per process and bucket that staging never
# uses (and that lands at a random moment, e.g. during a read meant to need no network).
BUCKET_METADATA_ENV = "DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA"


def get_client(*, pool_size: int = 16):
    """One google-cloud-storage Client per process (and per emulator host)."""
    os.environ.setdefault(BUCKET_METADATA_ENV, "true")
    with _client_lock:  # keyed by pid too: a forked dataloader worker must not share sockets
        return _make_client(os.environ.get("STORAGE_EMULATOR_HOST", ""), pool_size, os.getpid())


@functools.lru_cache(maxsize=8)
def _make_client(emulator_host: str, pool_size: int, pid: int):
    import requests.adapters

    with quiet_google_imports():
        import google.auth.exceptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

    try:
        if emulator_host:
            client = storage.Client(project=ANON_PROJECT, credentials=AnonymousCredentials())
        else:
            client = storage.Client()
    except google.auth.exceptions.DefaultCredentialsError as err:
        raise StagingError(
            "no Google credentials for gs:// sources; run `gcloud auth application-default "
            "login` or set GOOGLE_APPLICATION_CREDENTIALS"
        ) from err
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
    for scheme in ("http://", "https://"):
        client._http.mount(scheme, adapter)
    return client


class gcs_errors:
    """Map NotFound/Forbidden and an unreachable endpoint (retries exhausted) to one-line
    StagingErrors; let transient ones by (downloads retry them in staging/fetch.py)."""

    def __init__(
        self, ref: SourceRef, relpath: str, *, listing: bool = False, generation: int | None = None
    ) -> None:
        self.ref, self.relpath, self.listing, self.generation = ref, relpath, listing, generation

    def __enter__(self) -> None:
        return None

    def __exit__(self, etype, err, tb) -> bool:
        if err is None:
            return False
        from google.api_core import exceptions as gexc

        url = self.ref.object_url(self.relpath)
        if isinstance(err, gexc.NotFound) and self.listing:
            raise StagingError(
                f"bucket gs://{self.ref.bucket} not found (data.source={self.ref.url}); check "
                "the bucket name and project"
            ) from err
        if isinstance(err, gexc.NotFound) and self.generation is not None:
            raise StagingError(
                f"object {url} generation {self.generation} not found: it was replaced or deleted "
                "after it was listed; rerun staging"
            ) from err
        if isinstance(err, gexc.NotFound):
            raise StagingError(f"object {url} not found; check data.source") from err
        if isinstance(err, gexc.RetryError):
            raise StagingError(
                f"cannot reach GCS at {endpoint()} for {url} (gave up after "
                f"{METADATA_RETRY_S:.0f} s: {_reason(err.cause or err)}); check the network or "
                "STORAGE_EMULATOR_HOST"
            ) from err
        if isinstance(err, gexc.Forbidden | gexc.Unauthorized):
            raise StagingError(
                f"access denied to {url}; grant storage.objects.get/list to these credentials"
            ) from err
        return False


def _reason(err: BaseException) -> str:
    """A short reason: ``[Errno 111] Connection refused`` from a urllib3 chain, else the type."""
    import re

    found = re.search(r"\[Errno -?\d+\] [^'\")]+", str(err))
    if found:
        return found.group(0)
    first = str(err).splitlines()[0][:120] if str(err) else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def is_transient(err: BaseException) -> bool:
    """True for errors worth a retry: dropped connections, 429/5xx, timeouts, bad checksums."""
    import requests
    import urllib3.exceptions

    with quiet_google_imports():
        from google.api_core import exceptions as gexc

    from errors import CorruptDataError

    transient = (
        ConnectionError,
        TimeoutError,
        requests.exceptions.RequestException,
        urllib3.exceptions.HTTPError,
        gexc.TooManyRequests,
        gexc.ServerError,
        CorruptDataError,
    )
    if isinstance(err, transient):
        return True
    cause = err.__cause__ or err.__context__
    return cause is not None and cause is not err and is_transient(cause)
