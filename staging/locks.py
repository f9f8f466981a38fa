"""The per-object lock: a threading.Lock per stripe (this process's threads), then ``flock`` on
the stripe's file under ``<cache>/.locks`` (other processes).

About 20 us per acquisition, against ~400 us for filelock's general-purpose lock (measured here;
it is taken once per object). Where ``flock`` fails (some NFS) the lock does nothing, which costs
only bandwidth: the cache's write protocol never depends on it. A wait logs "still waiting" every
LOCK_POLL_S and gives up after LOCK_TIMEOUT_S with one line.
"""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def stripe_locked(path: Path) -> Iterator[None]:
    """Hold the lock of stripe file ``path`` (its folder exists) for the block."""
    waiter = _Waiter(path)
    stripe = _stripe_lock(path)
    while not stripe.acquire(timeout=LOCK_POLL_S):
        waiter.waited(LOCK_POLL_S)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _flock(fd, waiter)
            yield
        finally:
            os.close(fd)  # releases the flock
    finally:
        stripe.release()  # may run on another thread (a committer): a Lock allows that


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


def _flock(fd: int, waiter: _Waiter) -> None:
    """Take an exclusive flock, polling (1 ms, doubling to 50 ms) so the wait can time out."""
    delay = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            time.sleep(delay)
            waiter.waited(delay)
            delay = min(delay * 2, 0.05)
        except OSError:  # no flock on this filesystem: correctness never needed it
            return
