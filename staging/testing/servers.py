"""What the GCS emulator and the S3 server share: a storage server as its own process on loopback,
waiting until it answers, its CPU time, environment variables pointing a client at it, and the
upload of a folder into a bucket.

Harness code for tests, the CI smoke and the benchmarks; nothing that ships imports it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import LOOPBACK
from errors import StagingError
from staging.paths import SourceRef, parse_source

HOST = LOOPBACK
START_TIMEOUT_S = 30.0

_PIDS: dict[str, int] = {}  # url -> pid of servers run as processes


@contextlib.contextmanager
def server_process(
    cmd: list[str], url: str, *, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    """Run ``cmd`` (a server for ``url``) as a process for the block, known to
    server_cpu_seconds; terminate it after (killed if it lingers)."""
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


def server_cpu_seconds(url: str) -> float:
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


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set the variables ``values`` for the block; restore what was there after."""
    old = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def upload_tree(
    local: str | Path, url: str, *, kind: str,
    uploader: Callable[[SourceRef], Callable[[str, Path], None]], workers: int = 8,
) -> int:  # fmt: skip
    """Upload every file below ``local`` as ``<kind>://bucket/prefix/<relpath>``, ``workers`` at a
    time; return the count. ``uploader(ref)`` readies the bucket once and returns
    ``put(object_name, path)``."""
    ref = parse_source(url)
    if ref.kind != kind:
        raise StagingError(f"upload target {url!r} must be {kind}://bucket/prefix")
    root = Path(local)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    put = uploader(ref)

    def one(path: Path) -> None:
        put(ref.object_name(path.relative_to(root).as_posix()), path)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, files))
    return len(files)


def split_object_url(url: str, scheme: str) -> tuple[str, str]:
    """``scheme://bucket/name`` -> (bucket, name); the name is not checked, so tests can plant
    hostile names (``..``)."""
    prefix = f"{scheme}://"
    if not url.startswith(prefix) or "/" not in url[len(prefix) :]:
        raise StagingError(f"upload target {url!r} must be {scheme}://bucket/name")
    bucket, name = url[len(prefix) :].split("/", 1)
    return bucket, name
