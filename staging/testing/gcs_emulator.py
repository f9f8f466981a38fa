"""A GCS emulator on loopback for tests, the CI smoke and benchmarks.

    with running_emulator() as url:                 # sets STORAGE_EMULATOR_HOST=url
        upload_dir("/work/shared/coco-tiny", "gs://coco/coco2017")
        ...                                         # gs://coco/coco2017 is now COCO-shaped

The emulator (gcp-storage-emulator) runs as its own process by default (its own GIL, so it
behaves like a remote server), in memory, on a free 127.0.0.1 port.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from errors import StagingError
from staging.paths import GS, parse_source

ENV = "STORAGE_EMULATOR_HOST"
HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0

_PIDS: dict[str, int] = {}  # url -> pid of emulators run as processes


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_emulator(
    *, port: int = 0, in_process: bool = False, storage_dir: Path | None = None
) -> Iterator[str]:
    """Run gcp-storage-emulator on loopback and point STORAGE_EMULATOR_HOST at it; yield its URL.

    ``storage_dir`` keeps buckets on disk across runs (same objects, same generations), which is
    what lets a second CI smoke show a warm node cache; by default storage is in memory.
    """
    port = port or free_port()
    url = f"http://{HOST}:{port}"
    with _server(port, url, in_process=in_process, storage_dir=storage_dir):
        wait_healthy(url)
        with emulator_host(url):
            yield url


@contextlib.contextmanager
def emulator_host(url: str) -> Iterator[str]:
    """Point STORAGE_EMULATOR_HOST at ``url`` for the block; restore what was there after."""
    old = os.environ.get(ENV)
    os.environ[ENV] = url
    try:
        yield url
    finally:
        if old is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = old


@contextlib.contextmanager
def _server(port: int, url: str, *, in_process: bool, storage_dir: Path | None) -> Iterator[None]:
    if in_process and storage_dir is None:
        from gcp_storage_emulator.server import create_server

        server = create_server(HOST, port, in_memory=True)
        server.start()
        try:
            yield
        finally:
            server.stop()
        return
    cmd = [
        sys.executable,
        "-m",
        "gcp_storage_emulator",
        "start",
        "--host",
        HOST,
        "--port",
        str(port),
        "--quiet",
    ]
    env = dict(os.environ)
    if storage_dir is None:
        cmd.append("--in-memory")
    else:
        Path(storage_dir).mkdir(parents=True, exist_ok=True)
        env["STORAGE_BASE"] = str(storage_dir)  # the emulator keeps <STORAGE_BASE>/.cloudstorage
    with server_process(cmd, url, env=env):
        yield


@contextlib.contextmanager
def server_process(
    cmd: list[str], url: str, *, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    """Run ``cmd`` (a server for ``url``) as a process for the block, known to
    emulator_cpu_seconds; terminate it after (killed if it lingers)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _PIDS[url] = proc.pid
    try:
        yield proc
    finally:
        _PIDS.pop(url, None)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def emulator_cpu_seconds(url: str) -> float:
    """CPU seconds (user + system) the server process at ``url`` (GCS emulator, S3 server) has
    used so far (Linux)."""
    fields = Path(f"/proc/{_PIDS[url]}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_healthy(
    url: str, *, path: str = "/", what: str = "GCS emulator", hint: str = "",
    proc: subprocess.Popen | None = None,
) -> None:  # fmt: skip
    """Poll ``url + path`` until it answers 200; StagingError after START_TIMEOUT_S (or at once
    when the server's process ``proc`` has exited)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(f"{url}{path}", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
                raise StagingError(
                    f"{what} at {url} did not start in {START_TIMEOUT_S:.0f} s{hint}"
                ) from None
            time.sleep(0.05)


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
    ref = parse_source(url)
    if ref.kind != GS:
        raise StagingError(f"upload target {url!r} must be gs://bucket/prefix")
    root = Path(local)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    bucket = ensure_bucket(ref.bucket)

    def put(path: Path) -> None:
        rel = path.relative_to(root).as_posix()
        bucket.blob(ref.object_name(rel)).upload_from_filename(str(path))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(put, files))
    return len(files)


def upload_bytes(url: str, data: bytes) -> None:
    """Upload ``data`` as the object ``gs://bucket/name``; the name is not checked, so tests can
    plant hostile names (``..``)."""
    if not url.startswith("gs://") or "/" not in url[len("gs://") :]:
        raise StagingError(f"upload target {url!r} must be gs://bucket/name")
    bucket, name = url[len("gs://") :].split("/", 1)
    ensure_bucket(bucket).blob(name).upload_from_string(data)
