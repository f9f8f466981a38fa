"""The s3:// read-through backend (``s3_cached``) against moto's server over HTTP: reads through
the cache, and a changed object never mixes its new bytes with the annotations staged before it
(reads are pinned to the listed ETag; a versioned bucket serves the listed version)."""

from __future__ import annotations

import pytest
from staging_helpers import S3_SOURCE, snapshot

from errors import StagingError
from staging import DataSpec, backend, stage_coco
from staging.testing import s3_emulator

pytestmark = pytest.mark.s3


def _spec(tmp_path, source: str = S3_SOURCE) -> DataSpec:
    return DataSpec.from_dict({"source": source, "cache": str(tmp_path / "cache"),
                               "dest": str(tmp_path / "dest")})  # fmt: skip


def test_read_through_cache_and_warm_reads_need_no_network(
    s3_proxy, tmp_path, coco_sample, val_image, monkeypatch
):
    monkeypatch.setenv(backend.CACHE_ENV, str(tmp_path / "envcache"))  # reads by prefix alone
    from mmengine import fileio

    spec = _spec(tmp_path)
    stage_coco(spec)
    backend.register()
    assert spec.backend_args()["backend"] == "s3_cached"
    url = spec.image_prefix("val") + val_image.split("/")[1]
    assert url == f"{S3_SOURCE}/{val_image}"
    want = (coco_sample / val_image).read_bytes()
    assert fileio.get(url, backend_args=spec.backend_args()) == want
    assert len(s3_proxy.object_gets(val_image)) == 1
    seen = len(s3_proxy.records)
    monkeypatch.setattr(backend, "_memo", {})  # as a new loader process would
    assert fileio.get(url, backend_args=spec.backend_args()) == want
    assert len(s3_proxy.records) == seen  # index + cache: not one request
    assert fileio.get(url) == want  # by prefix: s3:// is registered to the same backend
    with fileio.get_local_path(url, backend_args=spec.backend_args()) as local:
        assert str(local).startswith(str(spec.cache))


def test_missing_object_is_one_clear_error(s3, tmp_path):
    from mmengine import fileio

    spec = _spec(tmp_path)
    backend.register()
    with pytest.raises(StagingError, match=r"missing object s3://coco/coco2017/val2017/nope\.jpg"):
        fileio.get(f"{S3_SOURCE}/val2017/nope.jpg", backend_args=spec.backend_args())
    assert snapshot(spec.cache) == {}


def _changed_bucket(coco_sample, name: str, *, versioned: bool) -> str:
    source = f"s3://{name}/coco"  # a private copy: the session's bucket stays as it is
    s3_emulator.ensure_bucket(name, versioned=versioned)
    s3_emulator.upload_dir(coco_sample, source)
    return source


def test_changed_object_never_mixes_with_old_annotations(s3, tmp_path, coco_sample):
    """Unversioned bucket: a cached image stays the one staged with the annotations; one not yet
    cached fails in one line rather than serving new bytes; re-staging moves both to the new
    bytes under a new cache entry (the old file stays for readers of the old view)."""
    from mmengine import fileio

    source = _changed_bucket(coco_sample, "changed", versioned=False)
    spec = _spec(tmp_path, source)
    stage_coco(spec)
    backend.register()
    a, b = sorted(p.name for p in (coco_sample / "val2017").iterdir())[:2]
    url_a, url_b = f"{source}/val2017/{a}", f"{source}/val2017/{b}"
    old_a = (coco_sample / "val2017" / a).read_bytes()
    assert fileio.get(url_a, backend_args=spec.backend_args()) == old_a
    old_path = backend.fetch_url(url_a, spec.cache, spec.index())
    s3_emulator.put_bytes(url_a, b"new bytes of a")
    s3_emulator.put_bytes(url_b, b"new bytes of b")
    assert fileio.get(url_a, backend_args=spec.backend_args()) == old_a  # pinned, cached
    with pytest.raises(StagingError) as err:
        fileio.get(url_b, backend_args=spec.backend_args())
    assert f"{url_b} changed after it was listed" in str(err.value)
    assert "rerun staging" in str(err.value) and "\n" not in str(err.value)
    stage_coco(spec)  # the annotations and the image pins move together
    assert fileio.get(url_a, backend_args=spec.backend_args()) == b"new bytes of a"
    assert fileio.get(url_b, backend_args=spec.backend_args()) == b"new bytes of b"
    new_path = backend.fetch_url(url_a, spec.cache, spec.index())
    assert new_path != old_path and old_path.read_bytes() == old_a


def test_versioned_bucket_serves_the_listed_version(s3_proxy, tmp_path, coco_sample):
    """Versioned bucket: an image changed after staging is read at the version listed with the
    staged annotations (found by its ETag, then fetched by version id)."""
    from mmengine import fileio

    source = _changed_bucket(coco_sample, "versioned", versioned=True)
    spec = _spec(tmp_path, source)
    stage_coco(spec)
    backend.register()
    name = sorted(p.name for p in (coco_sample / "val2017").iterdir())[0]
    url = f"{source}/val2017/{name}"
    s3_emulator.put_bytes(url, b"a newer version")
    old = (coco_sample / "val2017" / name).read_bytes()
    assert fileio.get(url, backend_args=spec.backend_args()) == old
    assert any("versionId=" in r.line for r in s3_proxy.object_gets(name))
    stage_coco(spec)
    assert fileio.get(url, backend_args=spec.backend_args()) == b"a newer version"
