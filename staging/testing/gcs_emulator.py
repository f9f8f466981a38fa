"""A GCS emulator on loopback for tests, the CI smoke and benchmarks.

    with running_emulator() as url:                 # sets STORAGE_EMULATOR_HOST=url
        upload_dir("/work/shared/coco-tiny", "gs://coco/coco2017")
        ...                                         # gs://coco/coco2017 is now COCO-shaped

The emulator (gcp-storage-emulator) runs as its own process by default (its own GIL, so it
behaves like a remote server), in memory, on a free 127.0.0.1 port. What it shares with the S3
server (process, health check, CPU time, environment, folder upload) is staging/testing/servers.py.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from common import free_port
from staging.paths import GS, SourceRef
from staging.testing import servers

ENV = "STORAGE_EMULATOR_HOST"


@contextlib.contextmanager
def running_emulator(
    *, port: int = 0, in_process: bool = False, storage_dir: Path | None = None
) -> Iterator[str]:
    """Run gcp-storage-emulator on loopback and point STORAGE_EMULATOR_HOST at it; yield its URL.

    ``storage_dir`` keeps buckets on disk across runs (same objects, same generations), which is
    what lets a second CI smoke show a warm node cache; by default storage is in memory.
    """
    port = port or free_port()
    url = f"http://{servers.HOST}:{port}"
    with _server(port, url, in_process=in_process, storage_dir=storage_dir):
        servers.wait_healthy(url)
        with emulator_host(url):
            yield url


@contextlib.contextmanager
def emulator_host(url: str) -> Iterator[str]:
    """Point STORAGE_EMULATOR_HOST at ``url`` for the block; restore what was there after."""
    with servers.environment({ENV: url}):
        yield url


@contextlib.contextmanager
def _server(port: int, url: str, *, in_process: bool, storage_dir: Path | None) -> Iterator[None]:
    if in_process and storage_dir is None:
        from gcp_storage_emulator.server import create_server

        server = create_server(servers.HOST, port, in_memory=True)
        server.start()
        try:
            yield
        finally:
            server.stop()
        return
    cmd = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", servers.HOST, "--port",
           str(port), "--quiet"]  # fmt: skip
    env = dict(os.environ)
    if storage_dir is None:
        cmd.append("--in-memory")
    else:
        Path(storage_dir).mkdir(parents=True, exist_ok=True)
        env["STORAGE_BASE"] = str(storage_dir)  # the emulator keeps <STORAGE_BASE>/.cloudstorage
    with servers.server_process(cmd, url, env=env):
        yield


def ensure_bucket(name: str):
    """Create bucket ``name`` in the emulator if it does not exist; return it."""
    from google.api_core.exceptions import Conflict

    from staging.stores.gcs import get_client

    client = get_client()
    with contextlib.suppress(Conflict):
        client.create_bucket(name)
    return client.bucket(name)


def upload_dir(local: str | Path, url: str, *, workers: int = 8) -> int:
    """Upload every file below ``local`` to ``gs://bucket/prefix/<relpath>``; return the count."""

    def uploader(ref: SourceRef):
        bucket = ensure_bucket(ref.bucket)
        return lambda name, path: bucket.blob(name).upload_from_filename(str(path))

    return servers.upload_tree(local, url, kind=GS, uploader=uploader, workers=workers)


def upload_bytes(url: str, data: bytes) -> None:
    """Upload ``data`` as the object ``gs://bucket/name``; the name is not checked, so tests can
    plant hostile names (``..``)."""
    bucket, name = servers.split_object_url(url, GS)
    ensure_bucket(bucket).blob(name).upload_from_string(data)
