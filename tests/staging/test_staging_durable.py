"""Group commit: one syncfs covers every writer that finished before it started."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from staging import durable


def test_concurrent_writers_share_syncfs_calls(tmp_path, monkeypatch):
    real = durable._syncfs()
    assert real is not None  # Linux: libc has syncfs
    calls = []

    def slow_syncfs(fd: int) -> int:  # the real syscall, made slow so writers queue behind it
        calls.append(fd)
        time.sleep(0.2)
        return real(fd)

    monkeypatch.setattr(durable, "_syncfs", lambda: slow_syncfs)
    monkeypatch.setattr(durable, "_devices", {})
    paths = []
    for i in range(32):
        p = tmp_path / f"f{i}"
        p.write_bytes(b"x" * 1000)
        paths.append(p)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(durable.make_durable, paths))
    assert 1 <= len(calls) < len(paths)


def test_without_syncfs_each_file_is_fsynced(tmp_path, monkeypatch):
    monkeypatch.setattr(durable, "_syncfs", lambda: None)
    fsynced = []
    monkeypatch.setattr(durable, "_fsync", fsynced.append)
    p = tmp_path / "f"
    p.write_bytes(b"data")
    durable.make_durable(p)
    assert fsynced == [p]


def test_committer_renames_only_after_the_flush_and_reports_failures(tmp_path, monkeypatch):
    """The group commit: finish() runs after one flush for the batch; a failed flush aborts
    every item of the batch (temp deleted, error in its Future) and still releases its lock."""
    flushed, events = [], []

    def flush(paths):
        paths = list(paths)
        flushed.append(paths)
        if any(p.name == "bad" for p in paths):
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(durable, "make_durable_many", flush)
    with durable.Committer() as committer:
        ok = committer.submit(tmp_path / "ok", finish=lambda: events.append("finish") or "done",
                              abort=lambda: events.append("abort"),
                              release=lambda: events.append("release"))  # fmt: skip
        ok.result(timeout=10)
        bad = committer.submit(tmp_path / "bad", finish=lambda: events.append("finish2"),
                               abort=lambda: events.append("abort2"),
                               release=lambda: events.append("release2"))  # fmt: skip
    assert ok.result() == "done" and isinstance(bad.exception(), OSError)
    assert events == ["finish", "release", "abort2", "release2"]
    assert [p.name for batch in flushed for p in batch] == ["ok", "bad"]
