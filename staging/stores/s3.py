"""``s3://bucket/prefix`` as a source, through boto3 (AWS S3 and S3-compatible stores).

Credentials come from boto3's standard chain (environment, shared config/profile, SSO, container
and instance roles, IRSA's web identity); ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` points
it at MinIO, Ceph RGW, R2 or any other S3-compatible store (boto3 reads both itself).

Identity is the listed ETag + size (content-derived, so re-uploading the same bytes keeps the
cache entry). Every read is pinned to that ETag (``If-Match``); when the object changed since it
was listed, a versioned bucket serves the listed version by its version id, and an unversioned
one fails with one line instead of mixing new bytes with old annotations. Integrity: the object's
additional checksum (``x-amz-checksum-mode: ENABLED``; SHA-256/SHA-1/CRC64NVME/CRC32C/CRC32 of
the whole object), else the MD5 in a single-part upload's ETag (not under SSE-KMS/SSE-C, where
the ETag is no MD5), else the size alone. staging/stores/fetch.py checks it over the whole file, so a
download resumed with a ranged GET is vetted as one.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

from errors import StagingError
from staging.paths import SourceRef, check_relpath
from staging.stores.sources import CONNECT_TIMEOUT_S, READ_TIMEOUT_S, ObjectInfo, Writer

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 14  # urllib3 fills each read in full: 16 kB reads keep a killed download's bytes
# (an object under one read lands whole or not at all; 64 kB left a 37 kB JSON nothing to resume)
METADATA_ATTEMPTS = 3  # botocore's standard retry mode, per call: attempts in all
ENDPOINT_ENVS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
CHECKSUM_PRIORITY = ("sha256", "sha1", "crc64nvme", "crc32c", "crc32")  # strongest first
MD5_ETAG = re.compile(r"[0-9a-f]{32}")
KMS = ("aws:kms", "aws:kms:dsse")
TRANSIENT_CODES = {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable",
                   "Throttling", "ThrottlingException", "RequestTimeTooSkewed"}  # fmt: skip
DENIED_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                "InvalidToken", "AllAccessDisabled", "403"}  # fmt: skip


class S3Source:
    """``s3://bucket/prefix``: listings (ListObjectsV2), HEAD for one object, pinned ranged GETs."""

    def __init__(self, ref: SourceRef, *, workers: int = 16) -> None:
        self.ref = ref
        self.client = get_client(pool_size=max(workers, 10))
        self._versions: dict[tuple, str] = {}  # (key, ETag) -> version id still serving it

    def _info(self, key: str, size: int, etag: str, *, verifiable: bool, version=None,
              crc32c=None) -> ObjectInfo:  # fmt: skip
        relpath = key[len(self.ref.prefix) + 1 :] if self.ref.prefix else key
        check_relpath(relpath, what=f"s3://{self.ref.bucket}/{key}")
        return ObjectInfo(
            relpath=relpath, url=self.ref.object_url(relpath), size=size,
            ident=f"etag={etag},size={size}", crc32c=crc32c, etag=etag, version=version,
            verifiable=verifiable,
        )  # fmt: skip

    def list_dir(self, reldir: str) -> list[ObjectInfo]:
        """Every object below ``reldir/`` (ListObjectsV2 pages of up to 1000 keys)."""
        prefix = self.ref.object_name(reldir).rstrip("/") + "/"
        out = []
        with s3_errors(self.ref, reldir, listing=True):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.ref.bucket, Prefix=prefix
            )
            for page in pages:
                for obj in page.get("Contents", ()):
                    if obj["Key"].endswith("/"):
                        continue  # a "folder" marker
                    etag = _etag(obj["ETag"])
                    full = obj.get("ChecksumType") == "FULL_OBJECT" or (
                        bool(obj.get("ChecksumAlgorithm")) and "-" not in etag
                    )
                    out.append(self._info(obj["Key"], int(obj["Size"]), etag,
                                          verifiable=full or bool(MD5_ETAG.fullmatch(etag))))  # fmt: skip
        return sorted(out, key=lambda i: i.relpath)

    def exists_dir(self, reldir: str) -> bool:
        prefix = self.ref.object_name(reldir).rstrip("/") + "/"
        with s3_errors(self.ref, reldir, listing=True):
            page = self.client.list_objects_v2(Bucket=self.ref.bucket, Prefix=prefix, MaxKeys=1)
        return bool(page.get("KeyCount") or page.get("Contents"))

    def stat(self, relpath: str) -> ObjectInfo:
        """Metadata for one object (HEAD); StagingError when it does not exist."""
        key = self.ref.object_name(relpath)
        with s3_errors(self.ref, relpath, head=True):
            head = self.client.head_object(Bucket=self.ref.bucket, Key=key)
        headers = head["ResponseMetadata"]["HTTPHeaders"]
        etag = _etag(head["ETag"])
        found = expected_checksum(headers, etag)
        return self._info(key, int(head["ContentLength"]), etag, verifiable=found is not None,
                          version=head.get("VersionId"),
                          crc32c=found[1] if found and found[0] == "crc32c" else None)  # fmt: skip

    def checksum_of(self, info: ObjectInfo) -> tuple[str, str] | None:
        """The checksum to vet ``info``'s bytes by (HEAD; for a download resumed mid-way)."""
        key = self.ref.object_name(info.relpath)
        args = self._pin(key, info)
        with s3_errors(self.ref, info.relpath, head=True):
            head = self.client.head_object(Bucket=self.ref.bucket, Key=key, **args)
        return expected_checksum(head["ResponseMetadata"]["HTTPHeaders"], info.etag or "")

    def read_into(self, info: ObjectInfo, writer: Writer, *, start: int) -> None:
        """GET the object pinned to its listed ETag from byte ``start`` (botocore retries only
        the request; staging/stores/fetch.py retries and resumes a cut body)."""
        key = self.ref.object_name(info.relpath)
        if start and writer.expected is None:
            found = self.checksum_of(info)
            if found is not None:
                writer.expect(*found)
        resp = self._get(key, info, start)
        headers = resp["ResponseMetadata"]["HTTPHeaders"]
        if start and "content-range" not in headers:
            raise StagingError(f"{info.url}: the store ignored a ranged GET; rerun staging")
        if not start:
            found = expected_checksum(headers, info.etag or "")
            if found is not None:
                writer.expect(*found)
        body = resp["Body"]
        try:
            for chunk in body.iter_chunks(READ_CHUNK):
                writer.write(chunk)
        finally:
            body.close()

    def _get(self, key: str, info: ObjectInfo, start: int) -> dict:
        args = self._pin(key, info)
        if start:
            args["Range"] = f"bytes={start}-"
        try:
            with s3_errors(self.ref, info.relpath, pinned=info.etag):
                return self.client.get_object(Bucket=self.ref.bucket, Key=key, **args)
        except _Changed:
            version = self._version_with(key, info.etag or "")
            if version is None:
                raise StagingError(
                    f"{info.url} changed after it was listed (ETag {info.etag} is gone and the "
                    "bucket keeps no older version); rerun staging so annotations and images "
                    "match"
                ) from None
            self._versions[(key, info.etag)] = version
            args = self._pin(key, info)
            with s3_errors(self.ref, info.relpath):
                return self.client.get_object(Bucket=self.ref.bucket, Key=key, **args)

    def _pin(self, key: str, info: ObjectInfo) -> dict:
        args = {"IfMatch": f'"{info.etag}"'} if info.etag else {}
        version = info.version or self._versions.get((key, info.etag))
        if version:
            args["VersionId"] = version
        return args

    def _version_with(self, key: str, etag: str) -> str | None:
        """The version id of ``key`` whose ETag is ``etag`` (a versioned bucket), else None."""
        try:
            pages = self.client.get_paginator("list_object_versions").paginate(
                Bucket=self.ref.bucket, Prefix=key
            )
            for page in pages:
                for v in page.get("Versions", ()):
                    version = v.get("VersionId")
                    if (
                        v["Key"] == key
                        and _etag(v["ETag"]) == etag
                        and version not in (None, "null")
                    ):
                        return version
        except Exception as err:  # no versioning API (some S3-compatible stores), no permission
            log.debug("no version listing for %s: %s", key, type(err).__name__)
        return None


SOURCE = S3Source  # what staging.stores.sources.open_source looks up


def expected_checksum(headers: dict, etag: str) -> tuple[str, str] | None:
    """(algorithm, value) that vouches for the whole object, from a GET/HEAD response's headers:
    a full-object additional checksum, else a single-part upload's MD5 ETag, else None."""
    from staging.stores import checksums

    composite = headers.get("x-amz-checksum-type", "").upper() == "COMPOSITE"
    for algorithm in CHECKSUM_PRIORITY:
        value = headers.get(f"x-amz-checksum-{algorithm}")
        if value and not composite and "-" not in value and checksums.supported(algorithm):
            return algorithm, value
    sse = headers.get("x-amz-server-side-encryption", "")
    customer_key = headers.get("x-amz-server-side-encryption-customer-algorithm")
    if MD5_ETAG.fullmatch(etag) and sse not in KMS and not customer_key:
        return "md5", etag
    return None


def _etag(raw: str) -> str:
    return raw.strip().strip('"')


def endpoint() -> str:
    """The S3 endpoint in use (the environment's, a profile's, or AWS's regional one), without
    any user:password part (never shown)."""
    try:
        url = get_client().meta.endpoint_url
    except Exception:  # a client that cannot even be made: say what the environment says
        url = next((os.environ[e] for e in ENDPOINT_ENVS if os.environ.get(e)), "") or "AWS S3"
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


_client_lock = threading.Lock()


def get_client(*, pool_size: int = 16):
    """One boto3 S3 client per process, endpoint and profile (thread-safe; botocore clients are)."""
    key = tuple(os.environ.get(e, "") for e in (*ENDPOINT_ENVS, "AWS_PROFILE", "AWS_REGION"))
    with _client_lock:  # keyed by pid too: a forked dataloader worker must not share sockets
        return _make_client(key, pool_size, os.getpid())


@functools.lru_cache(maxsize=8)
def _make_client(key: tuple, pool_size: int, pid: int):
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "total_max_attempts": METADATA_ATTEMPTS},
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        max_pool_connections=pool_size,
        # we verify whole files ourselves (a resumed one too): botocore's own check only covers
        # an unranged GET, so it is not asked for; the checksum headers are (below)
        response_checksum_validation="when_required",
    )
    client = boto3.session.Session().client("s3", config=config)
    for op in ("GetObject", "HeadObject"):
        client.meta.events.register(f"before-call.s3.{op}", _ask_for_checksum)
    return client


def _ask_for_checksum(params, **_kwargs) -> None:
    """``x-amz-checksum-mode: ENABLED``: S3 returns the object's additional checksum (a header
    set here, not the ChecksumMode parameter, which would also make botocore re-hash the body)."""
    params["headers"]["x-amz-checksum-mode"] = "ENABLED"


class _Changed(Exception):
    """A pinned read found another ETag (412 Precondition Failed)."""


@contextlib.contextmanager
def s3_errors(
    ref: SourceRef, relpath: str, *, listing: bool = False, head: bool = False,
    pinned: str | None = None,
) -> Iterator[None]:  # fmt: skip
    """Map botocore's errors to one-line StagingErrors naming the URL (never a credential);
    let transient ones by on downloads (staging/stores/fetch.py retries them). ``pinned``: a GET
    pinned to that ETag, whose 412 means the object changed (_Changed)."""
    from botocore import exceptions as bexc

    url = ref.object_url(relpath)
    metadata = listing or head
    try:
        yield
    except (bexc.NoCredentialsError, bexc.PartialCredentialsError) as err:
        raise StagingError(
            f"no AWS credentials for {url}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "or AWS_PROFILE, or run where an instance role (IRSA) provides them"
        ) from err
    except bexc.ClientError as err:
        _raise_client_error(err, ref, url, metadata=metadata, pinned=pinned)
        raise
    except (bexc.EndpointConnectionError, bexc.ConnectTimeoutError) as err:
        if not metadata:
            raise
        raise StagingError(
            f"cannot reach S3 at {endpoint()} for {url} (gave up after {METADATA_ATTEMPTS} "
            f"attempts: {type(err).__name__}); check the network or AWS_ENDPOINT_URL"
        ) from err


def _raise_client_error(err, ref: SourceRef, url: str, *, metadata: bool, pinned) -> None:
    error = err.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code == "NoSuchBucket":
        raise StagingError(
            f"bucket s3://{ref.bucket} not found (data.source={ref.url}) at {endpoint()}; check "
            "the bucket name and AWS_ENDPOINT_URL"
        ) from err
    if code in ("PreconditionFailed", "412") and pinned:
        raise _Changed(url) from err
    if code in ("NoSuchKey", "404", "NotFound"):
        raise StagingError(f"missing object {url}; check data.source and the bucket") from err
    if code in DENIED_CODES:
        raise StagingError(
            f"access denied to {url} ({code}); check the credentials (AWS_PROFILE, "
            "AWS_ACCESS_KEY_ID, the instance role) and grant s3:ListBucket and s3:GetObject"
        ) from err
    if metadata and is_transient_error(err):
        raise StagingError(
            f"S3 at {endpoint()} kept failing for {url} ({code or status} after "
            f"{METADATA_ATTEMPTS} attempts); retry later"
        ) from err


def is_transient_error(err: BaseException) -> bool:
    """botocore's retryable failures: dropped or cut connections, timeouts, 5xx, throttling."""
    from botocore import exceptions as bexc

    if isinstance(err, bexc.ClientError):
        error = err.response.get("Error", {})
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or status == 429 or error.get("Code") in TRANSIENT_CODES
    return isinstance(
        err,
        bexc.ConnectionError | bexc.HTTPClientError | bexc.ResponseStreamingError
        | bexc.IncompleteReadError | bexc.ReadTimeoutError | bexc.FlexibleChecksumError,
    )  # fmt: skip
