"""Bad inputs: one clear line on stderr, exit 1, and the cache exactly as it was."""

from __future__ import annotations

import json
import time

import pytest
from staging_helpers import incomplete_files, run_staging, snapshot, write_coco

from common import free_port


@pytest.fixture
def warm_cache(tmp_path, coco_sample):
    """A cache that already holds the staged COCO sample, so "untouched" means something."""
    ok = run_staging("--source", str(coco_sample), "--cache", str(tmp_path / "cache"),
                     "--dest", str(tmp_path / "dest0"))  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    return tmp_path / "cache"


def _fails_cleanly(cache, source: str, *extra: str, env=None, expect: str) -> None:
    before = snapshot(cache)
    done = run_staging("--source", source, "--cache", str(cache),
                       "--dest", str(cache.parent / "dest"), *extra, env=env)  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stdout
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert expect in lines[0], lines[0]
    assert snapshot(cache) == before
    assert incomplete_files(cache) == []
    assert not (cache.parent / "dest" / "annotations").exists()


def test_missing_local_path(warm_cache, tmp_path):
    _fails_cleanly(warm_cache, str(tmp_path / "nope"), expect="does not exist")


def _bad_json_source(tmp_path, text: str):
    src = write_coco(tmp_path / "src", splits=("val",))
    (src / "annotations" / "instances_val2017.json").write_text(text)
    return str(src)


def test_malformed_json(warm_cache, tmp_path):
    src = _bad_json_source(tmp_path, '{"images": [1, 2,, ]}')
    _fails_cleanly(warm_cache, src, "--splits", "val",
                   expect="val2017.json is not valid JSON: Expecting value at line 1")  # fmt: skip


def test_annotation_pointing_at_a_missing_image(warm_cache, tmp_path):
    src = write_coco(tmp_path / "src", splits=("val",))
    path = src / "annotations" / "instances_val2017.json"
    doc = json.loads(path.read_text())
    doc["annotations"][1]["image_id"] = 424242
    path.write_text(json.dumps(doc))
    _fails_cleanly(warm_cache, str(src), "--splits", "val",
                   expect="annotations[1] (id=11) names image_id=424242")  # fmt: skip


def test_not_enough_disk_space(warm_cache, tmp_path):
    src = write_coco(tmp_path / "src")
    _fails_cleanly(warm_cache, str(src), env={"STAGING_RESERVE_BYTES": str(1 << 60)},
                   expect="not enough disk space")  # fmt: skip


@pytest.mark.gcs
def test_missing_bucket(warm_cache, emulator):
    _fails_cleanly(
        warm_cache, "gs://no-such-bucket/coco", expect="bucket gs://no-such-bucket not found"
    )


@pytest.mark.gcs
def test_missing_object(warm_cache, emulator):
    _fails_cleanly(warm_cache, "gs://coco/not-there", expect="missing object gs://coco/not-there/")


@pytest.mark.gcs
def test_source_url_with_dotdot(warm_cache, emulator):
    _fails_cleanly(warm_cache, "gs://coco/coco2017/../other", expect="unsafe object name")


def test_unreachable_gcs_endpoint_fails_fast_with_one_line(warm_cache):
    port = free_port()  # a port nobody listens on: connections are refused
    t0 = time.monotonic()
    _fails_cleanly(warm_cache, "gs://coco/coco2017", env={"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}"},
                   expect=f"cannot reach GCS at http://127.0.0.1:{port}")  # fmt: skip
    assert time.monotonic() - t0 < 30  # bounded retries, not google-api-core's 120 s


def test_image_file_name_with_dotdot(warm_cache, tmp_path):
    src = write_coco(tmp_path / "src", splits=("val",))
    path = src / "annotations" / "instances_val2017.json"
    doc = json.loads(path.read_text())
    doc["images"][0]["file_name"] = "../../escape.jpg"
    path.write_text(json.dumps(doc))
    _fails_cleanly(warm_cache, str(src), "--splits", "val", "--with-images",
                   expect="unsafe object name '../../escape.jpg'")  # fmt: skip


def test_listed_gcs_name_with_dotdot_fake_blob():
    """The emulator cannot store a '..' name, so a stand-in blob (name/size/generation/crc32c)
    goes through GcsSource's real listing conversion."""
    from types import SimpleNamespace

    from errors import StagingError
    from staging.paths import parse_source
    from staging.stores.gcs import GcsSource

    source = GcsSource.__new__(GcsSource)
    source.ref = parse_source("gs://b/coco")
    blob = SimpleNamespace(name="coco/val2017/../../x.jpg", size=1, generation=1, crc32c="A")
    with pytest.raises(StagingError, match=r"unsafe object name 'val2017/\.\./\.\./x\.jpg'"):
        source._info(blob)


def test_bad_option_names_the_field(tmp_path):
    done = run_staging("--source", "az://x/y", "--cache", str(tmp_path), "--dest", str(tmp_path))
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        == "error: data.source='az://x/y': unsupported scheme; use a local path, gs:// or s3://"
    )


def test_with_images_and_an_image_the_json_names_missing_from_the_source(warm_cache, tmp_path):
    """Found while staging, not at the trial's first validation (issue 17, item 6)."""
    src = write_coco(tmp_path / "src", splits=("val",))
    (src / "val2017" / "000000000002.jpg").unlink()
    before = snapshot(warm_cache)
    done = run_staging("--source", str(src), "--cache", str(warm_cache), "--dest",
                       str(tmp_path / "dest"), "--splits", "val", "--with-images")  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert "name image '000000000002.jpg', but " in lines[0]
    assert f"{src}/val2017/000000000002.jpg does not exist; upload it or fix the JSON" in lines[0]
    assert incomplete_files(warm_cache) == [] and not (tmp_path / "dest").exists()
    assert snapshot(warm_cache) == before  # the JSON was not cached either (issue 29, W10)


def _truncated_train_source(tmp_path):
    src = write_coco(tmp_path / "src")
    train = src / "annotations" / "instances_train2017.json"
    train.write_text(train.read_text()[:100])
    return src


def test_one_bad_annotation_file_caches_none_of_them(warm_cache, tmp_path):
    """The val JSON is fine, the train JSON truncated: the val JSON was cached all the same
    (issue 29, W10). The annotation files are committed together or not at all."""
    _fails_cleanly(warm_cache, str(_truncated_train_source(tmp_path)),
                   expect="instances_train2017.json is not valid JSON")  # fmt: skip


def test_a_failed_first_stage_leaves_no_cache_behind(tmp_path):
    cache = tmp_path / "new" / "cache"
    done = run_staging("--source", str(_truncated_train_source(tmp_path)), "--cache", str(cache),
                       "--dest", str(tmp_path / "dest"))  # fmt: skip
    assert done.returncode == 1 and "is not valid JSON" in done.stderr, done.stderr
    assert not cache.exists() and not (tmp_path / "dest").exists()


@pytest.mark.parametrize("kind", ["file", "below-a-file"])
def test_a_cache_that_cannot_be_written_names_the_option(tmp_path, coco_sample, kind):
    (tmp_path / "blocker").write_text("x")
    cache = tmp_path / "blocker" if kind == "file" else tmp_path / "blocker" / "cache"
    done = run_staging("--source", str(coco_sample), "--cache", str(cache),
                       "--dest", str(tmp_path / "dest"))  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: --cache (data.cache) {cache} is "), lines[0]
    assert (tmp_path / "blocker").read_text() == "x"
