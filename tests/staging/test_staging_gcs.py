"""Staging from the GCS emulator over real HTTP, through the tests' own fault proxy on loopback."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from staging_helpers import (
    GS_SOURCE,
    REPO,
    incomplete_files,
    kill_mid_download,
    run_staging,
    snapshot,
    stage_args,
)

from staging.testing.fault_proxy import Rule

pytestmark = pytest.mark.gcs

VAL_JSON = "instances_val2017.json"
TRAIN_JSON = "instances_train2017.json"  # the sample's largest object: the one faults hit mid-way


def _objects(coco_sample: Path) -> int:
    """Objects a full stage with images fetches: 2 annotation files + every image."""
    return 2 + len(list(coco_sample.glob("*2017/*.jpg")))


def _same_tree(dest: Path, coco_sample: Path, rels: list[str]) -> None:
    for rel in rels:
        assert filecmp.cmp(dest / rel, coco_sample / rel, shallow=False), rel


def test_stage_twice_second_run_downloads_nothing(proxy, tmp_path, coco_sample):
    first = run_staging(*stage_args(GS_SOURCE, tmp_path, "--with-images", "--subset", "3"))
    assert first.returncode == 0, first.stderr
    assert "8 files" in first.stdout and "8 downloaded, 0 cache hits" in first.stdout
    media = len(proxy.media_requests())
    assert media == 8
    second = run_staging(*stage_args(GS_SOURCE, tmp_path, "--with-images", "--subset", "3"))
    assert second.returncode == 0, second.stderr
    assert "0 downloaded, 8 cache hits" in second.stdout
    assert len(proxy.media_requests()) == media  # metadata listings only
    dest = tmp_path / "dest"
    images = sorted(p.relative_to(dest).as_posix() for p in dest.glob("*2017/*.jpg"))
    assert len(images) == 6
    _same_tree(dest, coco_sample, images)
    assert (dest / "annotations" / VAL_JSON).stat().st_size < (
        coco_sample / "annotations" / VAL_JSON
    ).stat().st_size


def test_eight_processes_download_each_object_once(proxy, tmp_path, coco_sample):
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def args(i: int) -> list[str]:
        dest = str(tmp_path / f"dest{i}")
        return ["--source", GS_SOURCE, "--cache", str(tmp_path / "cache"),
                "--dest", dest, "--with-images", "--workers", "4"]  # fmt: skip

    cmd = [sys.executable, "-m", "staging", "--quiet"]
    procs = [
        subprocess.Popen(
            [*cmd, *args(i)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [o[1][-500:] for o in outs]
    media = [r.line.split()[1].split("?")[0] for r in proxy.media_requests()]
    total = _objects(coco_sample)
    assert len(media) == total and len(set(media)) == total  # 2 JSON + the images, once each
    assert sum(int(o[0].split(": ")[1].split()[0]) for o in outs) == total  # downloads over all
    rels = [p.relative_to(coco_sample).as_posix() for p in coco_sample.glob("*2017/*.jpg")]
    for i in range(8):
        _same_tree(tmp_path / f"dest{i}", coco_sample, rels)
    _same_tree(tmp_path / "dest0", coco_sample, [f"annotations/{VAL_JSON}"])
    assert incomplete_files(tmp_path) == []


def test_cut_connection_is_resumed_with_a_range_request(proxy, tmp_path, coco_sample):
    half = (coco_sample / "annotations" / TRAIN_JSON).stat().st_size // 2
    proxy.rules.append(Rule("cut", match=TRAIN_JSON, times=1, at=half))
    done = run_staging(*stage_args(GS_SOURCE, tmp_path, "--splits", "train"))
    assert done.returncode == 0, done.stderr
    tries = proxy.media_requests(TRAIN_JSON)
    assert [t.fault for t in tries] == ["cut", ""]
    assert tries[1].range == f"bytes={half}-"
    _same_tree(tmp_path / "dest", coco_sample, [f"annotations/{TRAIN_JSON}"])


def test_flipped_bytes_are_detected_and_refetched(proxy, tmp_path, coco_sample):
    proxy.rules.append(Rule("flip", match=VAL_JSON, times=1, at=777))
    done = run_staging(*stage_args(GS_SOURCE, tmp_path, "--splits", "val"))
    assert done.returncode == 0, done.stderr
    assert "retrying" in done.stderr and "crc32c" in done.stderr
    assert [t.fault for t in proxy.media_requests(VAL_JSON)] == ["flip", ""]
    _same_tree(tmp_path / "dest", coco_sample, [f"annotations/{VAL_JSON}"])


def test_retries_exhausted_clear_error_and_cache_unchanged(proxy, tmp_path):
    proxy.rules.append(Rule("flip", match=VAL_JSON, times=-1, at=10))
    failed = run_staging(*stage_args(GS_SOURCE, tmp_path, "--splits", "val"))
    assert failed.returncode == 1
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("error: giving up on gs://coco/coco2017/annotations/instances_val2017")
    assert "after 5 attempt(s)" in last and "cache is unchanged" in last
    assert len(proxy.media_requests(VAL_JSON)) == 5
    assert snapshot(tmp_path / "cache") == {}
    assert incomplete_files(tmp_path) == []


def test_kill_9_mid_download_then_rerun_resumes(proxy, tmp_path, coco_sample):
    proxy.rules.append(Rule("slow", match=TRAIN_JSON, times=1, delay=0.5))
    kill_mid_download(GS_SOURCE, tmp_path, "--splits", "train")
    assert not any(p.name == TRAIN_JSON for p in (tmp_path / "cache").rglob("*"))  # no final path
    assert not (tmp_path / "dest" / "annotations" / TRAIN_JSON).exists()
    rerun = run_staging(*stage_args(GS_SOURCE, tmp_path, "--splits", "train"))
    assert rerun.returncode == 0, rerun.stderr
    resumed = proxy.media_requests(TRAIN_JSON)[-1]
    assert resumed.range.startswith("bytes=") and resumed.range != "bytes=0-"
    _same_tree(tmp_path / "dest", coco_sample, [f"annotations/{TRAIN_JSON}"])
    assert incomplete_files(tmp_path) == []


def test_latency_option_delays_every_request(emulator):
    """The bench's latency proxy (staging/testing/fault_proxy.py): every request waits latency_s first."""
    import urllib.request

    from staging.testing.fault_proxy import FaultProxy

    proxy = FaultProxy(int(emulator.rsplit(":", 1)[1]), latency_s=0.2)
    try:
        for _ in range(2):
            t0 = time.monotonic()
            with urllib.request.urlopen(f"{proxy.url}/", timeout=10) as resp:
                assert resp.status == 200
            assert time.monotonic() - t0 >= 0.2
        assert len(proxy.records) == 2
    finally:
        proxy.close()
