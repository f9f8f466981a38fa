"""``gs://bucket/prefix`` as a source, through google-cloud-storage (ADC, or the emulator's host).

Identity is the object's generation + crc32c; reads pin the generation listed.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import warnings
from collections.abc import Iterator

from errors import StagingError
from staging.paths import SourceRef, check_relpath
from staging.stores.sources import (
    CONNECT_TIMEOUT_S,
    METADATA_RETRY_S,
    READ_TIMEOUT_S,
    ObjectInfo,
    Writer,
    short_reason,
)

ANON_PROJECT = "test"


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
    StagingErrors; let transient ones by (downloads retry them in staging/stores/fetch.py)."""

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
                f"{METADATA_RETRY_S:.0f} s: {short_reason(err.cause or err)}); check the network or "
                "STORAGE_EMULATOR_HOST"
            ) from err
        if isinstance(err, gexc.Forbidden | gexc.Unauthorized):
            raise StagingError(
                f"access denied to {url}; grant storage.objects.get/list to these credentials"
            ) from err
        return False


SOURCE = GcsSource  # what staging.stores.sources.open_source looks up


def is_transient_error(err: BaseException) -> bool:
    """GCS's own transient errors: 429 and 5xx."""
    with quiet_google_imports():
        from google.api_core import exceptions as gexc

    return isinstance(err, gexc.TooManyRequests | gexc.ServerError)
