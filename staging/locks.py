"""The per-object lock: a threading.Lock per stripe (this process's threads), then a POSIX
record lock on byte <stripe> of one file, ``<cache>/.locks/stripes`` (other processes).

One file, opened once per process and never closed (closing any descriptor of a file drops the
process's record locks on it), so taking a lock creates no file: a few microseconds, against
~170 us to create a lock file per stripe on a fresh cache here and ~400 us for filelock (it is
taken once per object). Where record locks fail (some NFS) the lock does nothing, which costs
only bandwidth: the cache's write protocol never depends on it. A wait logs "still waiting"
every LOCK_POLL_S and gives up after LOCK_TIMEOUT_S with one line.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from errors import StagingError

log = logging.getLogger(__name__)

LOCK_POLL_S = 10.0
LOCK_TIMEOUT_S = 3600.0


RECORDS_FILE = "stripes"


@contextlib.contextmanager
def stripe_locked(path: Path) -> Iterator[None]:
    """Hold stripe ``path`` (``<cache>/.locks/<hex stripe>.lock`` from paths.lock_path; its
    folder exists) for the block; the release may run on another thread (a committer)."""
    waiter = _Waiter(path)
    stripe = _stripe_lock(path)
    while not stripe.acquire(timeout=LOCK_POLL_S):
        waiter.waited(LOCK_POLL_S)
    try:
        fd, offset = _records_fd(path.parent), int(path.stem, 16)
        locked = _record_lock(fd, offset, waiter)
        try:
            yield
        finally:
            if locked:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)
    finally:
        stripe.release()


_fds: dict[Path, int] = {}  # .locks folder -> the records file, open for this process's life


def _records_fd(folder: Path) -> int:
    fd = _fds.get(folder)
    if fd is None:
        with _stripes_lock:
            fd = _fds.get(folder)
            if fd is None:
                fd = _fds[folder] = os.open(folder / RECORDS_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    return fd


def _record_lock(fd: int, offset: int, waiter: _Waiter) -> bool:
    """Lock byte ``offset`` of ``fd``, polling (1 ms, doubling to 50 ms) so the wait can time
    out; False where the filesystem has no record locks (correctness never needed them)."""
    delay = 0.001
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
            return True
        except OSError as err:
            if err.errno not in (errno.EACCES, errno.EAGAIN):
                return False
        time.sleep(delay)
        waiter.waited(delay)
        delay = min(delay * 2, 0.05)


_stripes: dict[Path, threading.Lock] = {}
_stripes_lock = threading.Lock()


def _forget_stripes() -> None:
    """In a forked child (a DataLoader worker): the parent's held stripes are not the child's,
    and a Lock copied while held would never be released there."""
    global _stripes_lock
    _stripes.clear()
    _stripes_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_stripes)


def _stripe_lock(path: Path) -> threading.Lock:
    lock = _stripes.get(path)
    if lock is None:
        with _stripes_lock:
            lock = _stripes.setdefault(path, threading.Lock())
    return lock


class _Waiter:
    """Counts the time spent waiting for a lock; logs "still waiting", raises at the timeout."""

    def __init__(self, path: Path) -> None:
        self.path, self.total, self.logged = path, 0.0, 0.0

    def waited(self, seconds: float) -> None:
        self.total += seconds
        if self.total - self.logged >= LOCK_POLL_S:
            self.logged = self.total
            log.info("still waiting for %s (%.0f s): another process stages it", self.path,
                     self.total)  # fmt: skip
        if self.total >= LOCK_TIMEOUT_S:
            raise StagingError(
                f"timed out after {self.total:.0f} s waiting for lock {self.path}; if no other "
                "staging process runs, delete that lock file"
            )
