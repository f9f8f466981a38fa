"""The mmengine gs:// backend: first read downloads into the cache, later reads hit local disk."""

from __future__ import annotations

import pytest
from staging_helpers import GS_SOURCE, snapshot

from errors import StagingError
from staging import DataSpec, backend

pytestmark = pytest.mark.gcs


@pytest.fixture
def spec(tmp_path) -> DataSpec:
    return DataSpec.from_dict({"source": GS_SOURCE, "cache": str(tmp_path / "cache"),
                               "dest": str(tmp_path / "dest")})  # fmt: skip


def test_read_through_cache(proxy, spec, coco_sample, val_image, monkeypatch):
    from mmengine import fileio

    backend.register()
    backend.register()  # idempotent
    url = spec.image_prefix("val") + val_image.split("/")[1]
    assert url == f"{GS_SOURCE}/{val_image}"
    want = (coco_sample / val_image).read_bytes()
    assert fileio.get(url, backend_args=spec.backend_args()) == want
    assert len(proxy.media_requests()) == 1
    assert fileio.get(url, backend_args=spec.backend_args()) == want  # same process: memo
    monkeypatch.setattr(backend, "_memo", {})  # a new process: the cache's refs, no network
    assert fileio.get(url, backend_args=spec.backend_args()) == want
    assert len(proxy.media_requests()) == 1
    files = snapshot(spec.cache)
    assert any(name.endswith(val_image.split("/")[1]) for name in files)
    with fileio.get_local_path(url, backend_args=spec.backend_args()) as local:
        assert str(local).startswith(str(spec.cache))


def test_prefix_lookup_uses_cache_from_env(proxy, tmp_path, coco_sample, val_image, monkeypatch):
    from mmengine import fileio

    backend.register()
    monkeypatch.setenv(backend.CACHE_ENV, str(tmp_path / "envcache"))
    assert fileio.get(f"{GS_SOURCE}/{val_image}") == (coco_sample / val_image).read_bytes()
    assert snapshot(tmp_path / "envcache")


def test_missing_object_is_one_clear_error(proxy, spec):
    from mmengine import fileio

    backend.register()
    with pytest.raises(StagingError, match=r"missing object gs://coco/coco2017/val2017/nope\.jpg"):
        fileio.get(f"{GS_SOURCE}/val2017/nope.jpg", backend_args=spec.backend_args())
    assert snapshot(spec.cache) == {}


def test_reuploaded_object_is_never_served_stale(proxy, tmp_path, coco_sample, val_image):
    """Reads follow the generation staging pinned beside the annotations; re-staging after a
    re-upload serves the new bytes (issue 14: the cache was keyed by URL only)."""
    from mmengine import fileio

    from staging import stage_coco
    from staging.testing.gcs_emulator import upload_bytes, upload_dir

    source = "gs://coco/reupload"  # a private copy: the session's gs://coco/coco2017 stays as is
    upload_dir(coco_sample, source)
    spec = DataSpec.from_dict({"source": source, "cache": str(tmp_path / "cache"),
                               "dest": str(tmp_path / "dest")})  # fmt: skip
    stage_coco(spec)
    backend.register()
    url = f"{source}/{val_image}"
    old, new = (coco_sample / val_image).read_bytes(), b"new bytes of a re-uploaded image"
    assert fileio.get(url, backend_args=spec.backend_args()) == old
    upload_bytes(url, new)
    # not re-staged yet: the image that belongs with the staged annotations
    assert fileio.get(url, backend_args=spec.backend_args()) == old
    stage_coco(spec)
    assert fileio.get(url, backend_args=spec.backend_args()) == new
    unpinned = {k: v for k, v in spec.backend_args().items() if k != "index"}
    assert fileio.get(url, backend_args=unpinned) == new  # no index: asks GCS each read
    upload_bytes(url, b"newer still")
    assert fileio.get(url, backend_args=unpinned) == b"newer still"


def test_warm_reads_need_no_network(proxy, tmp_path, coco_sample, val_image, monkeypatch):
    from mmengine import fileio

    from staging import stage_coco

    spec = DataSpec.from_dict({"source": GS_SOURCE, "cache": str(tmp_path / "cache"),
                               "dest": str(tmp_path / "dest")})  # fmt: skip
    stage_coco(spec)
    backend.register()
    url = f"{GS_SOURCE}/{val_image}"
    assert (
        fileio.get(url, backend_args=spec.backend_args()) == (coco_sample / val_image).read_bytes()
    )
    seen = len(proxy.records)
    monkeypatch.setattr(backend, "_memo", {})  # as a new loader process would
    assert (
        fileio.get(url, backend_args=spec.backend_args()) == (coco_sample / val_image).read_bytes()
    )
    assert len(proxy.records) == seen  # index + cache: not one request
