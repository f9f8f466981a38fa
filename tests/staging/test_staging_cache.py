"""The cache write protocol on real files: leftovers, bad checksums, racing writers, no space."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
from staging_helpers import incomplete_files, snapshot

from errors import CorruptDataError, StagingError
from staging import writers
from staging.cache import RESERVE_ENV, Cache, file_crc32c, recorded_crc32c
from staging.paths import parse_source
from staging.stores.sources import LocalSource
from staging.writers import partial_dir, temp_name

SIZE = 3 * (1 << 20) + 123


def _dead_writers_temp(final) -> str:
    """The temp-file name a killed writer on this host leaves behind (its pid has exited)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return f"{final.name}.{writers._HOST}-{proc.pid}.deadbeef.incomplete"


@pytest.fixture
def src(tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    (root / "blob.bin").write_bytes(os.urandom(SIZE))
    source = LocalSource(parse_source(str(root)))
    return source, source.stat("blob.bin")


def test_hit_after_download_and_files_are_read_only(tmp_path, src):
    source, info = src
    cache = Cache(tmp_path / "cache")
    first = cache.ensure(info, source)
    assert first.downloaded and first.path.read_bytes() == (source.root / "blob.bin").read_bytes()
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o444
    assert first.crc32c == file_crc32c(first.path) == recorded_crc32c(first.path)
    again = cache.ensure(info, source)
    assert not again.downloaded and again.path == first.path


def test_leftover_incomplete_is_resumed_when_checksum_known(tmp_path, src):
    source, info = src
    info = replace(info, crc32c=file_crc32c(source.root / "blob.bin"))
    cache = Cache(tmp_path / "cache")
    final = cache.final_path(info)
    head = (source.root / "blob.bin").read_bytes()[: 1 << 20]
    (partial_dir(final) / _dead_writers_temp(final)).write_bytes(head)
    counted = []
    got = cache.ensure(info, source, on_bytes=counted.append)
    assert got.downloaded and sum(counted) == SIZE - len(head)  # only the rest was read
    assert got.path.read_bytes() == (source.root / "blob.bin").read_bytes()
    assert incomplete_files(cache.root) == []


def test_leftover_garbage_without_checksum_is_discarded(tmp_path, src):
    source, info = src
    cache = Cache(tmp_path / "cache")
    final = cache.final_path(info)
    (partial_dir(final) / _dead_writers_temp(final)).write_bytes(b"x" * 1000)
    got = cache.ensure(info, source)
    assert got.path.read_bytes() == (source.root / "blob.bin").read_bytes()
    assert incomplete_files(cache.root) == []


def test_checksum_mismatch_never_reaches_the_cache(tmp_path, src):
    source, info = src
    cache = Cache(tmp_path / "cache")
    with pytest.raises(CorruptDataError, match=r"giving up on .*blob\.bin after 5 attempt"):
        cache.ensure(replace(info, crc32c="AAAAAA=="), source)
    assert snapshot(cache.root) == {}
    assert incomplete_files(tmp_path) == []


@pytest.mark.parametrize("broken_lock", [False, True])
def test_concurrent_writers_one_result_no_temp_files(tmp_path, src, monkeypatch, broken_lock):
    source, info = src
    cache = Cache(tmp_path / "cache")
    if broken_lock:  # like flock on some NFS: the lock silently does nothing
        monkeypatch.setattr(Cache, "locked", lambda self, final: contextlib.nullcontext())
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: cache.ensure(info, source), range(8)))
    assert {r.path for r in results} == {cache.final_path(info)}
    assert results[0].path.read_bytes() == (source.root / "blob.bin").read_bytes()
    if not broken_lock:
        assert sum(r.downloaded for r in results) == 1
    assert incomplete_files(cache.root) == []


def test_not_enough_space_leaves_cache_untouched(tmp_path, src, monkeypatch):
    source, info = src
    cache = Cache(tmp_path / "cache")
    monkeypatch.setenv(RESERVE_ENV, str(1 << 60))
    with pytest.raises(StagingError, match=r"not enough disk space in .*STAGING_RESERVE_BYTES"):
        cache.ensure(info, source)
    assert snapshot(cache.root) == {}


def test_verify_refetches_a_corrupted_cached_file(tmp_path, src):
    source, info = src
    cache = Cache(tmp_path / "cache")
    path = cache.ensure(info, source).path
    path.chmod(0o644)
    with open(path, "r+b") as f:
        f.write(b"garbage!")
    assert not cache.ensure(info, source).downloaded  # warm run: metadata only, no re-hash
    fixed = cache.ensure(info, source, verify=True)
    assert fixed.downloaded and path.read_bytes() == (source.root / "blob.bin").read_bytes()


def test_source_file_changing_during_the_copy_is_refused(tmp_path, src):
    source, info = src
    cache = Cache(tmp_path / "cache")

    class Touching:  # the real LocalSource, with a writer appending to the file mid-copy
        ref = source.ref

        def read_into(self, info, writer, *, start):
            with open(source.root / "blob.bin", "ab") as f:
                f.write(b"more")
            source.read_into(info, writer, start=start)

    with pytest.raises(StagingError, match=r"blob\.bin changed while it was being copied"):
        cache.ensure(info, Touching())
    assert snapshot(cache.root) == {}


def test_live_writers_temp_files_are_left_alone(tmp_path, src):
    """With a lock that did nothing, another live writer's temp file must not be taken."""
    source, info = src
    cache = Cache(tmp_path / "cache")
    final = cache.final_path(info)
    live = partial_dir(final) / temp_name(final)  # this process: alive
    live.write_bytes(b"in flight")
    got = cache.ensure(info, source)
    assert got.path.read_bytes() == (source.root / "blob.bin").read_bytes()
    assert live.read_bytes() == b"in flight"
