"""``invoke bench staging``, S3 part: moto's S3 server on loopback, side by side in one run.

1. client CPU per object, cold stage of OBJECTS x OBJECT_BYTES: staging vs a bare boto3 loop
   (list, ``get_object``, write; botocore's default response checksum validation on) -- no
   latency, so CPU is all there is to compare (goal <= 1.5x, like GCS);
2. cold stage at LATENCY_MS per request (staging/testing/fault_proxy.py, its own process): staging vs
   s3transfer's TransferManager, boto3's own parallel download path, at the same concurrency
   and given the listed size and ETag, so neither sends a HEAD (goal >= 1.0x).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from pathlib import Path

from bench.harness import goal, median_of, report
from bench.staging_net import LATENCY_MS, OBJECT_BYTES, OBJECTS, WORKERS, latency_proxy
from bench.staging_util import busy, stage_seconds, write_image_tree
from staging.paths import human_bytes, parse_source

BUCKET_URL = "s3://bench/coco"
BENCH = "staging"


def bench_s3(root: Path, runs: int) -> None:
    """Print the two S3 ratios (see the module docstring)."""
    from staging.testing.s3_emulator import running_s3, s3_endpoint, upload_dir
    from staging.testing.servers import server_cpu_seconds

    total = write_image_tree(root / "src", files=OBJECTS, size=OBJECT_BYTES)
    n = OBJECTS + 1

    def stage(tag: str, **kw) -> Callable[[int], float]:
        return lambda i: stage_seconds(BUCKET_URL, root / f"{tag}-cache{i}", root / f"{tag}-dest{i}",
                                       with_images=True, splits=["train"], **kw)  # fmt: skip

    with running_s3() as url:
        upload_dir(root / "src", BUCKET_URL, workers=4)
        cpu = functools.partial(server_cpu_seconds, url)
        bare = busy(cpu, lambda i: bare_boto3_loop(root / f"bare{i}"), runs)
        ours = busy(cpu, stage("cpu"), runs)
        with latency_proxy(url, LATENCY_MS, point=s3_endpoint):
            manager = median_of(lambda i: manager_download(root / f"tm{i}", workers=WORKERS), runs)
            staged = median_of(stage("lat", workers=WORKERS), runs)
    ratio = ours[2] / bare[2]
    print(f"client CPU per object, cold S3 stage of {n} objects ({human_bytes(total)}) from moto "
          f"on loopback: staging {ours[2] / n * 1000:.2f} ms vs bare boto3 get_object loop "
          f"{bare[2] / n * 1000:.2f} ms -> {ratio:.2f}x ({goal('<= 1.5x', ratio <= 1.5)})")  # fmt: skip
    report(BENCH, "s3_cpu", staging_ms_per_object=ours[2] / n * 1000,
           bare_ms_per_object=bare[2] / n * 1000, ratio=ratio, met=ratio <= 1.5)  # fmt: skip
    print(f"  (wall: staging {ours[0]:.2f} s vs bare loop {bare[0]:.2f} s; server CPU "
          f"{ours[1]:.2f} vs {bare[1]:.2f} s; {os.cpu_count()} shared CPUs)")  # fmt: skip
    print(f"cold S3 stage at {LATENCY_MS:.0f} ms per request ({n} objects, {WORKERS} workers "
          f"each): staging {staged:.2f} s vs s3transfer TransferManager {manager:.2f} s -> "
          f"{manager / staged:.2f}x ({goal('>= 1.0x', manager / staged >= 1.0)})")  # fmt: skip
    report(BENCH, "s3_latency", staging_s=staged, transfer_manager_s=manager,
           ratio=manager / staged, met=manager / staged >= 1.0)  # fmt: skip


def _listing(client) -> list[dict]:
    ref = parse_source(BUCKET_URL)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=ref.bucket, Prefix=ref.prefix)
    return [obj for page in pages for obj in page.get("Contents", ())]


def bare_boto3_loop(out: Path) -> float:
    """The plain loop a user would write: list, then get_object + write one by one."""
    import boto3

    client = boto3.session.Session().client("s3")
    bucket = parse_source(BUCKET_URL).bucket
    t0 = time.perf_counter()
    for obj in _listing(client):
        path = out / obj["Key"]
        path.parent.mkdir(parents=True, exist_ok=True)
        body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"]
        path.write_bytes(body.read())
    return time.perf_counter() - t0


def manager_download(out: Path, *, workers: int) -> float:
    """s3transfer's TransferManager (what boto3's download_file runs) with ``workers`` request
    threads, told each object's listed size and ETag up front (no HEAD per object)."""
    import boto3
    from botocore.config import Config
    from s3transfer.manager import TransferConfig, TransferManager
    from s3transfer.subscribers import BaseSubscriber

    class Listed(BaseSubscriber):
        def __init__(self, obj: dict) -> None:
            self.obj = obj

        def on_queued(self, future, **kwargs) -> None:
            future.meta.provide_transfer_size(self.obj["Size"])
            future.meta.provide_object_etag(self.obj["ETag"])

    client = boto3.session.Session().client("s3", config=Config(max_pool_connections=workers))
    bucket = parse_source(BUCKET_URL).bucket
    t0 = time.perf_counter()
    with TransferManager(client, TransferConfig(max_request_concurrency=workers)) as manager:
        futures = []
        for obj in _listing(client):
            path = out / obj["Key"]
            path.parent.mkdir(parents=True, exist_ok=True)
            futures.append(manager.download(bucket, obj["Key"], str(path),
                                            subscribers=[Listed(obj)]))  # fmt: skip
        for future in futures:
            future.result()
    return time.perf_counter() - t0
