"""Staging from S3 (moto's standalone server, its own process, real HTTP on loopback) through the
tests' fault proxy: the GCS guarantees, for s3:// — downloads once, resumes a cut body with a
ranged GET, catches flipped bytes by the object's own checksum, gives up in one line, never
mixes a changed object's bytes with the annotations listed before it, and never shows a
credential."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

import pytest
from staging_helpers import (
    REPO,
    S3_SOURCE,
    incomplete_files,
    kill_mid_download,
    run_staging,
    snapshot,
    stage_args,
)

from staging.testing import s3_emulator
from staging.testing.fault_proxy import Rule

pytestmark = pytest.mark.s3

VAL_JSON = "instances_val2017.json"
TRAIN_JSON = "instances_train2017.json"  # the sample's largest object: the one faults hit mid-way


def _same(dest: Path, coco_sample: Path, rels: list[str]) -> None:
    for rel in rels:
        assert filecmp.cmp(dest / rel, coco_sample / rel, shallow=False), rel


def _images(coco_sample: Path) -> list[str]:
    return sorted(p.relative_to(coco_sample).as_posix() for p in coco_sample.glob("*2017/*.jpg"))


def test_stage_twice_second_run_downloads_nothing(s3_proxy, tmp_path, coco_sample):
    args = stage_args(S3_SOURCE, tmp_path, "--with-images", "--subset", "3")
    first = run_staging(*args)
    assert first.returncode == 0, first.stderr
    assert "8 files" in first.stdout and "8 downloaded, 0 cache hits" in first.stdout
    assert len(s3_proxy.object_gets()) == 8
    second = run_staging(*args)
    assert second.returncode == 0, second.stderr
    assert "0 downloaded, 8 cache hits" in second.stdout
    assert len(s3_proxy.object_gets()) == 8  # listings only
    dest = tmp_path / "dest"
    images = sorted(p.relative_to(dest).as_posix() for p in dest.glob("*2017/*.jpg"))
    assert len(images) == 6
    _same(dest, coco_sample, images)


def test_eight_processes_download_each_object_once(s3_proxy, tmp_path, coco_sample):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "staging", "--quiet", "--source", S3_SOURCE,
           "--cache", str(tmp_path / "cache"), "--with-images", "--workers", "4"]  # fmt: skip
    procs = [
        subprocess.Popen([*cmd, "--dest", str(tmp_path / f"dest{i}")], cwd=REPO, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(8)
    ]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [o[1][-500:] for o in outs]
    gets = [r.line.split()[1] for r in s3_proxy.object_gets()]
    total = 2 + len(_images(coco_sample))
    assert len(gets) == total and len(set(gets)) == total  # 2 JSON + the images, once each
    assert sum(int(o[0].split(": ")[1].split()[0]) for o in outs) == total
    for i in range(8):
        _same(tmp_path / f"dest{i}", coco_sample, _images(coco_sample))
    assert incomplete_files(tmp_path) == []


def test_cut_connection_is_resumed_with_a_range_request(s3_proxy, tmp_path, coco_sample):
    half = (coco_sample / "annotations" / TRAIN_JSON).stat().st_size // 2
    s3_proxy.rules.append(Rule("cut", match=TRAIN_JSON, method="GET", times=1, at=half))
    done = run_staging(*stage_args(S3_SOURCE, tmp_path, "--splits", "train"))
    assert done.returncode == 0, done.stderr
    tries = s3_proxy.object_gets(TRAIN_JSON)
    assert [t.fault for t in tries] == ["cut", ""]
    assert tries[1].range == f"bytes={half}-"
    _same(tmp_path / "dest", coco_sample, [f"annotations/{TRAIN_JSON}"])


def test_flipped_bytes_are_detected_and_refetched(s3_proxy, tmp_path, coco_sample):
    s3_proxy.rules.append(Rule("flip", match=VAL_JSON, method="GET", times=1, at=777))
    done = run_staging(*stage_args(S3_SOURCE, tmp_path, "--splits", "val"))
    assert done.returncode == 0, done.stderr
    assert "retrying" in done.stderr and "crc32 " in done.stderr  # boto3's default checksum
    assert [t.fault for t in s3_proxy.object_gets(VAL_JSON)] == ["flip", ""]
    _same(tmp_path / "dest", coco_sample, [f"annotations/{VAL_JSON}"])


def test_retries_exhausted_clear_error_and_cache_unchanged(s3_proxy, tmp_path):
    s3_proxy.rules.append(Rule("flip", match=VAL_JSON, method="GET", times=-1, at=10))
    failed = run_staging(*stage_args(S3_SOURCE, tmp_path, "--splits", "val"))
    assert failed.returncode == 1
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: giving up on {S3_SOURCE}/annotations/{VAL_JSON}")
    assert "after 5 attempt(s)" in last and "cache is unchanged" in last
    assert len(s3_proxy.object_gets(VAL_JSON)) == 5
    assert snapshot(tmp_path / "cache") == {}
    assert incomplete_files(tmp_path) == []


def test_kill_9_mid_download_then_rerun_resumes(s3_proxy, tmp_path, coco_sample):
    """A dead writer's temp file is adopted and resumed; the joined file is vetted against the
    object's checksum (a HEAD asks for it: the ranged GET carries none)."""
    s3_proxy.rules.append(Rule("slow", match=TRAIN_JSON, method="GET", times=1, delay=0.5))
    kill_mid_download(S3_SOURCE, tmp_path, "--splits", "train")
    rerun = run_staging(*stage_args(S3_SOURCE, tmp_path, "--splits", "train"))
    assert rerun.returncode == 0, rerun.stderr
    resumed = s3_proxy.object_gets(TRAIN_JSON)[-1]
    assert resumed.range.startswith("bytes=") and resumed.range != "bytes=0-"
    assert any(r.line.startswith("HEAD ") and TRAIN_JSON in r.line for r in s3_proxy.records)
    _same(tmp_path / "dest", coco_sample, [f"annotations/{TRAIN_JSON}"])
    assert incomplete_files(tmp_path) == []


UPLOADS = {  # what vouches for the object -> how it is uploaded
    "crc32c": {"ChecksumAlgorithm": "CRC32C"},  # botocore computes it (awscrt)
    "crc32": {},  # boto3's default
    "crc64nvme": {"ChecksumAlgorithm": "CRC64NVME"},
    "sha256": {"ChecksumAlgorithm": "SHA256"},
    "md5": "no-checksum",  # a single-part upload without an additional checksum: MD5 ETag
}


@pytest.mark.parametrize("algorithm", sorted(UPLOADS))
def test_each_checksum_kind_catches_a_flipped_byte(s3_proxy, tmp_path, algorithm, caplog):
    """The strongest checksum the object has vets it: a flipped byte is caught and refetched."""
    import boto3
    from botocore.config import Config

    from staging.cache import Cache
    from staging.paths import parse_source
    from staging.stores.sources import open_source

    data = os.urandom(300_000)
    url = f"s3://kinds/{algorithm}/obj.bin"
    how = UPLOADS[algorithm]
    if how == "no-checksum":
        s3_emulator.ensure_bucket("kinds")
        plain = boto3.session.Session().client(
            "s3", config=Config(request_checksum_calculation="when_required")
        )
        plain.put_object(Bucket="kinds", Key=f"{algorithm}/obj.bin", Body=data)
    else:
        s3_emulator.put_bytes(url, data, **how)
    source = open_source(parse_source(f"s3://kinds/{algorithm}"))
    (listed,) = source.list_dir("")
    assert listed.verifiable and listed.ident == source.stat("obj.bin").ident
    s3_proxy.rules.append(Rule("flip", match=f"{algorithm}/obj.bin", method="GET", at=12345))
    with caplog.at_level("WARNING"):
        fetched = Cache(tmp_path / "cache").ensure(listed, source)
    assert fetched.path.read_bytes() == data
    assert f": {algorithm} " in caplog.text  # the retry names what caught it
    assert [r.fault for r in s3_proxy.object_gets(f"{algorithm}/obj.bin")] == ["flip", ""]
