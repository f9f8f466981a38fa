"""``invoke bench staging``, network part: GCS at real-world latency, and the read-through backend.

A latency proxy (staging/testing/fault_proxy.py, in its own process) sits between the client and the emulator
and delays every request by LATENCY_MS (about a same-region GCS first byte). In one run and at
equal worker counts it times a serial google-cloud-storage loop, google-cloud-storage's own
``transfer_manager.download_many`` (threads) and ``stage_coco``; then what the ``gs://``
read-through backend delivers to a data loader, warm (against mmengine's local backend on the
same files) and cold (LOADER_WORKERS processes, like DataLoader workers).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.harness import goal, median_of, report
from common import REPO_ROOT
from staging.paths import human_bytes

LATENCY_MS = 20.0
OBJECTS = 300
OBJECT_BYTES = 100_000
WORKERS = 16  # DEFAULT_WORKERS of data.workers; the same for every side
LOADER_WORKERS = 8
WARM_PASSES = 20
BUCKET_URL = "gs://bench/coco"
BENCH = "staging"


def bench_latency(root: Path, runs: int) -> None:
    """Serial loop vs transfer_manager vs stage_coco on OBJECTS x OBJECT_BYTES at LATENCY_MS."""
    from bench.staging_util import stage_seconds, write_image_tree
    from staging.testing.gcs_emulator import running_emulator, upload_dir

    total = write_image_tree(root / "src", files=OBJECTS, size=OBJECT_BYTES)
    with running_emulator() as url, latency_proxy(url, LATENCY_MS):
        upload_dir(root / "src", BUCKET_URL, workers=4)
        serial = median_of(lambda i: serial_download(root / f"serial{i}"), runs)
        manager = median_of(lambda i: manager_download(root / f"tm{i}", workers=WORKERS), runs)
        stage = median_of(lambda i: stage_seconds(BUCKET_URL, root / f"cache{i}", root / f"dest{i}",
                                               with_images=True, splits=["train"],
                                               workers=WORKERS), runs)  # fmt: skip
    print(f"cold GCS stage at {LATENCY_MS:.0f} ms per request ({OBJECTS + 1} objects, "
          f"{human_bytes(total)}, {WORKERS} workers each): staging {stage:.2f} s, "
          f"transfer_manager.download_many {manager:.2f} s, serial loop {serial:.2f} s")  # fmt: skip
    print(f"  vs serial loop: {serial / stage:.1f}x faster "
          f"({goal('>= 8x', serial / stage >= 8)})")  # fmt: skip
    print(f"  vs transfer_manager: {manager / stage:.2f}x "
          f"({goal('>= 1.0x', manager / stage >= 1.0)})")  # fmt: skip
    report(BENCH, "gcs_latency", staging_s=stage, transfer_manager_s=manager, serial_s=serial,
           met=serial / stage >= 8 and manager / stage >= 1.0)  # fmt: skip


def bench_read_through(root: Path, runs: int) -> None:
    """Warm backend get() vs mmengine's local backend; cold images/s with loader processes."""
    from bench.staging_util import stage_seconds, write_image_tree
    from staging.testing.gcs_emulator import running_emulator, upload_dir

    write_image_tree(root / "src", files=OBJECTS, size=OBJECT_BYTES)
    names = sorted(p.name for p in (root / "src" / "train2017").iterdir())
    urls = [f"{BUCKET_URL}/train2017/{n}" for n in names]
    with running_emulator() as url, latency_proxy(url, LATENCY_MS):
        upload_dir(root / "src", BUCKET_URL, workers=4)
        args = [_stage_for_backend(root / f"cold{i}", stage_seconds) for i in range(runs)]
        cold = median_of(lambda i: len(urls) / _loader_seconds(urls, args[i]), runs)
        warm, local = _warm_pair(urls, args[0], runs=runs)
    ratio = warm / local
    print(f"read-through backend, warm get() of {len(urls)} cached {human_bytes(OBJECT_BYTES)} "
          f"images x {WARM_PASSES}, best of {max(runs, 5)}: {warm * 1e6:.1f} us vs mmengine local backend "
          f"{local * 1e6:.1f} us per image -> {ratio:.2f}x the time "
          f"({goal('<= 1.1x', ratio <= 1.1)})")  # fmt: skip
    print(f"read-through backend, cold at {LATENCY_MS:.0f} ms per request with "
          f"{LOADER_WORKERS} loader processes: {cold:.0f} images/s "
          f"({goal('>= 200', cold >= 200)})")  # fmt: skip
    report(BENCH, "read_through", warm_us=warm * 1e6, local_us=local * 1e6, warm_ratio=ratio,
           cold_images_per_s=cold, met=ratio <= 1.1 and cold >= 200)  # fmt: skip


def _stage_for_backend(root: Path, stage_seconds: Callable) -> dict:
    """Stage annotations + the image index only (images are read through the backend)."""
    from staging import DataSpec

    data = {"source": BUCKET_URL, "cache": str(root / "cache"), "dest": str(root / "dest"),
            "splits": ["train"]}  # fmt: skip
    stage_seconds(BUCKET_URL, root / "cache", root / "dest", splits=["train"])
    return DataSpec.from_dict(data).backend_args() or {}


def _loader_seconds(urls: list[str], backend_args: dict) -> float:
    """Wall time for LOADER_WORKERS forked processes to read ``urls`` (a share each), cold."""
    ctx = multiprocessing.get_context("fork")  # what a DataLoader does on Linux
    shares = [urls[i::LOADER_WORKERS] for i in range(LOADER_WORKERS)]
    start = ctx.Barrier(LOADER_WORKERS + 1)
    procs = [ctx.Process(target=_loader, args=(s, backend_args, start)) for s in shares]
    for p in procs:
        p.start()
    start.wait()
    t0 = time.perf_counter()
    for p in procs:
        p.join()
    if any(p.exitcode for p in procs):
        raise RuntimeError("a loader process failed")
    return time.perf_counter() - t0


def _loader(urls: list[str], backend_args: dict, start) -> None:
    from mmengine import fileio

    from staging.backend import register

    register()
    start.wait()
    for url in urls:
        fileio.get(url, backend_args=backend_args)


def _warm_pair(urls: list[str], backend_args: dict, *, runs: int) -> tuple[float, float]:
    """Seconds per get(): through the backend (all cached) and mmengine's local backend reading
    the very same cached files."""
    from mmengine import fileio

    from staging.backend import fetch_url, register

    register()
    for url in urls:
        fileio.get(url, backend_args=backend_args)  # make sure every one is cached
    cache, index = backend_args["cache"], backend_args["index"]
    paths = [str(fetch_url(u, cache, index)) for u in urls]

    def timed(items: list[str], args: dict | None) -> Callable[[int], float]:
        def run(_: int) -> float:
            t0 = time.perf_counter()
            for _pass in range(WARM_PASSES):
                for item in items:
                    fileio.get(item, backend_args=args)
            return (time.perf_counter() - t0) / (WARM_PASSES * len(items))

        return run

    ours, local = [], []
    for i in range(max(runs, 5)):  # interleaved, alternating who goes first: drift hits both
        pair = [(ours, urls, backend_args), (local, paths, None)]
        for out, items, args in pair if i % 2 == 0 else pair[::-1]:
            out.append(timed(items, args)(i))
    return min(ours), min(local)  # best of N: load on a shared machine only ever adds time


@contextlib.contextmanager
def latency_proxy(
    emulator_url: str, latency_ms: float, *, point: Callable | None = None
) -> Iterator[str]:
    """staging/testing/fault_proxy.py in its own process in front of a server on loopback; ``point(url)``
    (default: STORAGE_EMULATOR_HOST, the GCS emulator) points the client at it in the block."""
    from staging.testing.gcs_emulator import emulator_host

    point = point or emulator_host
    port = emulator_url.rsplit(":", 1)[1]
    repo = str(REPO_ROOT)
    cmd = [sys.executable, "-m", "staging.testing.fault_proxy", "--upstream", port,
           "--latency-ms", str(latency_ms)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": repo}
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdin is not None
    url = proc.stdout.readline().strip()
    try:
        with point(url):
            yield url
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)


def serial_download(out: Path, *, fsync: bool = False) -> float:
    """The plain loop a user would write: list, then download_to_filename one by one."""
    from staging.stores.gcs import get_client

    client = get_client()
    t0 = time.perf_counter()
    bucket, prefix = BUCKET_URL[len("gs://") :].split("/", 1)
    for blob in client.list_blobs(bucket, prefix=f"{prefix}/"):
        path = out / blob.name
        path.parent.mkdir(parents=True, exist_ok=True)
        blob.download_to_filename(str(path))
        if fsync:
            fd = os.open(path, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
    return time.perf_counter() - t0


def manager_download(out: Path, *, workers: int) -> float:
    """google-cloud-storage's own parallel path: list, then transfer_manager.download_many."""
    from google.cloud.storage import transfer_manager

    from staging.stores.gcs import get_client

    client = get_client(pool_size=workers)
    t0 = time.perf_counter()
    bucket, prefix = BUCKET_URL[len("gs://") :].split("/", 1)
    pairs = []
    for blob in client.list_blobs(bucket, prefix=f"{prefix}/"):
        path = out / blob.name
        path.parent.mkdir(parents=True, exist_ok=True)
        pairs.append((blob, str(path)))
    results = transfer_manager.download_many(
        pairs, max_workers=workers, worker_type=transfer_manager.THREAD, raise_exception=True
    )
    assert all(r is None for r in results)
    return time.perf_counter() - t0
