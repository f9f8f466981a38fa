"""An S3 server on loopback for tests, the CI smoke and benchmarks: moto's standalone server.

    with running_s3() as url:              # AWS_ENDPOINT_URL(_S3)=url, test credentials
        upload_dir("/work/shared/coco-tiny", "s3://coco/coco2017")
        ...                                # s3://coco/coco2017 is now COCO-shaped

The server (``python -m moto.server``, from ``moto[server]``) runs as its own process (its own
GIL, so it behaves like a remote store), in memory, on a free 127.0.0.1 port, and speaks real S3
over HTTP: ListObjectsV2, HEAD/GET with Range and If-Match, additional checksums, versioning.
Inside the block instance-metadata lookups are off, so nothing leaves loopback. What it shares
with the GCS emulator is staging/testing/servers.py.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from common import free_port
from staging.paths import S3, SourceRef
from staging.testing import servers

ENDPOINT_ENVS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never ask 169.254.169.254 for a role
}


@contextlib.contextmanager
def running_s3(*, port: int = 0) -> Iterator[str]:
    """Run moto's S3 server on loopback and point boto3 at it (test credentials); yield its URL."""
    port = port or free_port()
    url = f"http://{servers.HOST}:{port}"
    cmd = [sys.executable, "-m", "moto.server", "-H", servers.HOST, "-p", str(port)]
    with servers.server_process(cmd, url) as proc:
        servers.wait_healthy(url, path="/moto-api/data.json", what="moto S3 server", proc=proc,
                     hint="; is moto installed (pip install -e '.[dev]')?")  # fmt: skip
        with s3_endpoint(url, credentials=TEST_ENV):
            yield url


@contextlib.contextmanager
def s3_endpoint(url: str, *, credentials: dict[str, str] | None = None) -> Iterator[str]:
    """Point AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_S3 (and ``credentials``) at ``url`` for the
    block; restore what was there after."""
    with servers.environment({**dict.fromkeys(ENDPOINT_ENVS, url), **(credentials or {})}):
        yield url


def client():
    """A plain boto3 client for the server (uploads and test set-up, not staging's own)."""
    import boto3

    return boto3.session.Session().client("s3")


def ensure_bucket(name: str, *, versioned: bool = False) -> None:
    """Create bucket ``name`` if it does not exist (versioning on when asked)."""
    s3 = client()
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=name)
    if versioned:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})


def upload_dir(local: str | Path, url: str, *, workers: int = 8, **put_args) -> int:
    """Upload every file below ``local`` to ``s3://bucket/prefix/<relpath>`` (boto3's default
    CRC32 checksum unless ``put_args`` say otherwise); return the count."""

    def uploader(ref: SourceRef):
        ensure_bucket(ref.bucket)
        s3 = client()
        return lambda key, path: s3.put_object(
            Bucket=ref.bucket, Key=key, Body=path.read_bytes(), **put_args
        )

    return servers.upload_tree(local, url, kind=S3, uploader=uploader, workers=workers)


def put_bytes(url: str, data: bytes, **put_args) -> dict:
    """Upload ``data`` as the object ``s3://bucket/key`` (the bucket is made if missing)."""
    bucket, key = servers.split_object_url(url, S3)
    ensure_bucket(bucket)
    return client().put_object(Bucket=bucket, Key=key, Body=data, **put_args)
