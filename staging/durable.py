"""Group commit: make many freshly written temp files durable with one ``syncfs(2)``.

An ``fsync`` per file costs a journal commit each (~1-6 ms on the virtual disks measured here);
for thousands of small images that is most of a cold stage. A writer instead takes a ticket after
closing its temp file and calls ``make_durable``: whoever holds the sync lock runs one ``syncfs``
on the cache's filesystem, which covers every ticket issued before it started, so writers that
queue behind it are usually done without a sync of their own. The rename into the final path
still happens only after the data is on disk. Where ``syncfs`` is missing (not Linux), each file
is fsynced as usual.

``Committer`` goes one step further for a run of many small objects: a worker hands over its
finished, verified temp file and goes on with the next download, and one background thread makes
each batch of handed-over files durable with one ``syncfs``, then renames them into place (and
releases their locks). No worker waits for a disk flush.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import queue
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

MAX_PENDING = 4096  # handed-over files not yet committed (each holds a lock stripe)

_state_lock = threading.Lock()
_devices: dict[int, _Device] = {}
_dev_of: dict[str, int] = {}  # folder -> st_dev (a folder does not change filesystem)


class _Device:
    """Tickets and the sync lock of one filesystem (syncfs covers only its own)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.issued = 0
        self.synced = 0


def _forget_devices() -> None:
    """In a forked child: a sync lock copied while a parent thread held it would never be
    released; the child starts with fresh tickets."""
    global _state_lock
    _devices.clear()
    _state_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_devices)


@functools.cache
def _syncfs():
    """libc's syncfs, or None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def make_durable(path: Path) -> None:
    """Return once ``path`` (written and closed by this thread) is on stable storage."""
    make_durable_many([path])


def make_durable_one(path: Path) -> None:
    """Make one file durable on its own (fsync): for a lone download, which should not wait
    for a flush of everything else on the filesystem."""
    _fsync(path)


def make_durable_many(paths: Iterable[Path]) -> None:
    """Return once every one of ``paths`` (written and closed) is on stable storage: one
    ``syncfs`` per filesystem they are on (or one fsync each where syncfs is missing)."""
    syncfs = _syncfs()
    by_dev: dict[int, Path] = {}
    for path in paths:
        if syncfs is None:
            _fsync(path)
            continue
        folder = os.path.dirname(path)
        dev = _dev_of.get(folder)
        if dev is None:
            dev = _dev_of[folder] = os.stat(folder).st_dev
        by_dev.setdefault(dev, path)
    for dev, path in by_dev.items():
        _sync_device(syncfs, dev, path)


def _sync_device(syncfs, dev: int, path: Path) -> None:
    with _state_lock:
        device = _devices.setdefault(dev, _Device())
        device.issued += 1
        ticket = device.issued
    with device.lock:
        if device.synced >= ticket:
            return  # a syncfs that started after our write already covered it
        with _state_lock:
            upto = device.issued
        fd = os.open(path, os.O_RDONLY)
        try:
            if syncfs(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"syncfs failed: {os.strerror(err)}", str(path))
        finally:
            os.close(fd)
        device.synced = upto


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class NotCommitted(Exception):
    """A held file that was not committed because ``Committer.discard()`` was called (another
    file of its group failed)."""


class Committer:
    """Group commit for a run of downloads (see the module docstring); use as a context manager.

    ``submit(path, finish, abort, release)``: ``path`` is a closed temp file. After the batch's
    flush, ``finish()`` runs (rename into place; its value is the Future's result); if the flush
    or ``finish`` fails, ``abort()`` runs (delete the temp file) and the Future holds the error.
    ``release()`` (the object's lock) always runs last.

    ``hold=True`` makes a group all-or-nothing: nothing is committed before the block ends, and
    then everything is, unless ``discard()`` was called: then every file is aborted and its
    Future holds NotCommitted.
    """

    def __init__(self, *, max_pending: int = MAX_PENDING, hold: bool = False) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._slots = threading.BoundedSemaphore(max_pending)
        self._hold = hold
        self._discarded = False
        self._thread = threading.Thread(target=self._run, name="staging-commit", daemon=True)
        self._thread.start()

    def __enter__(self) -> Committer:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            self._discarded = True  # the group did not finish: commit none of it
        self._queue.put(None)
        self._thread.join()

    def discard(self) -> None:
        """Held files are aborted instead of committed when the block ends."""
        self._discarded = True

    def submit(
        self, path: Path, *, finish: Callable[[], Any], abort: Callable[[], None],
        release: Callable[[], None],
    ) -> Future:  # fmt: skip
        self._slots.acquire()  # back-pressure: bounded open lock files
        fut: Future = Future()
        self._queue.put((path, finish, abort, release, fut))
        return fut

    def _run(self) -> None:
        held: list = []
        while True:
            batch = [self._queue.get()]
            with contextlib.suppress(queue.Empty):
                while True:
                    batch.append(self._queue.get_nowait())
            items = [b for b in batch if b is not None]
            if self._hold:
                held += items
            elif items:
                self._commit(items)
            if len(items) < len(batch):
                if held:
                    self._commit(held, discard=self._discarded)
                return

    def _commit(self, items: list, *, discard: bool = False) -> None:
        try:
            if discard:
                raise NotCommitted("not committed: another file of its group failed")
            make_durable_many(item[0] for item in items)
            flushed: BaseException | None = None
        except (OSError, NotCommitted) as err:
            flushed = err
        for _path, finish, abort, release, fut in items:
            try:
                if flushed is not None:
                    raise flushed
                fut.set_result(finish())
            except BaseException as err:
                with contextlib.suppress(Exception):
                    abort()
                fut.set_exception(err)
            finally:
                release()
                self._slots.release()
