"""Concurrent writers of the node cache: the per-object lock, and the temp files that say whose
they are.

The lock: a threading.Lock per stripe (this process's threads), then a POSIX record lock on byte
<stripe> of one file, ``<cache>/.locks/stripes`` (other processes).

One file, opened once per process and never closed (closing any descriptor of a file drops the
process's record locks on it), so taking a lock creates no file: a few microseconds, against
~170 us to create a lock file per stripe on a fresh cache here and ~400 us for filelock (it is
taken once per object). Where record locks fail (some NFS) the lock does nothing, which costs
only bandwidth: the cache's write protocol never depends on it. A wait logs "still waiting"
every LOCK_POLL_S and gives up after LOCK_TIMEOUT_S with one line.

The temp files: ``<name>.<host>-<pid>.<uuid8>.incomplete`` in a ``.partial/`` folder beside the
final path, so a writer can tell a dead writer's leftover (resumed or removed) from a live one's
(never touched; it exists when a lock silently did nothing).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from errors import StagingError
from staging.paths import INCOMPLETE, LOCKS_DIR

log = logging.getLogger(__name__)

LOCK_POLL_S = 10.0
LOCK_TIMEOUT_S = 3600.0
RECORDS_FILE = "stripes"
PARTIAL_DIR = ".partial"
STALE_S = 3600.0  # a temp file of another host untouched this long has no live writer
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


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


_made_dirs: set[Path] = set()


def temp_name(final: Path) -> str:
    """``<name>.<host>-<pid>.<uuid8>.incomplete``: unique, and says which writer owns it."""
    return f"{final.name}.{_HOST}-{os.getpid()}.{uuid.uuid4().hex[:8]}{INCOMPLETE}"


def _writer_is_gone(path: Path) -> bool:
    """True when the writer of a temp file cannot still be writing it: its process on this
    host has exited, or (another host, an unknown name) it has not changed for STALE_S."""
    owner = path.name[: -len(INCOMPLETE)].rsplit(".", 2)[-2] if path.name.count(".") >= 3 else ""
    host, _, pid = owner.partition("-")
    if host == _HOST and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    try:
        return time.time() - path.stat().st_mtime > STALE_S
    except FileNotFoundError:
        return False


def adopt_leftover(final: Path, tmp: Path, *, resumable: bool) -> bool:
    """Take over a dead writer's ``*.incomplete`` so the download resumes; delete other dead
    ones. Live writers' files are left alone (they exist when a lock silently did nothing).

    Adopts only when the source gives a checksum that will vet the joined bytes (GCS's crc32c;
    S3's additional checksum or MD5 ETag).
    Returns True when ``tmp`` now holds the leftover's bytes.
    """
    found = _leftovers(tmp.parent, final.name)
    dead = sorted((p for p in found if _writer_is_gone(p)), key=_size, reverse=True)
    adopted = False
    for path in dead:
        with contextlib.suppress(FileNotFoundError):
            if resumable and not adopted:
                os.rename(path, tmp)  # atomic: a racing adopter gets FileNotFoundError
                adopted = True
            else:
                path.unlink()
    return adopted


def discard_leftovers(final: Path) -> None:
    """Delete the temp files that dead writers of ``final`` left (for a file that is built, not
    downloaded, so nothing can be resumed); live writers' files are left alone."""
    adopt_leftover(final, partial_dir(final) / temp_name(final), resumable=False)


_scanned: dict[Path, dict[str, list[str]]] = {}  # .partial/ -> final name -> temp names
_scan_lock = threading.Lock()


def _forget_scans() -> None:
    global _scan_lock
    _scanned.clear()  # a forked child rescans (and its lock copy may have been held)
    _scan_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_scans)


def _leftovers(folder: Path, final_name: str) -> list[Path]:
    """Temp files for ``final_name`` that were in ``folder`` when this process first looked
    there: one scan per folder and process, not one per object. (A writer that dies while we
    run leaves its file to the next run, which resumes or deletes it.)"""
    with _scan_lock:
        groups = _scanned.get(folder)
        if groups is None:
            groups = {}
            with contextlib.suppress(FileNotFoundError):
                for name in os.listdir(folder):
                    if name.endswith(INCOMPLETE) and name.count(".") >= 3:
                        groups.setdefault(name.rsplit(".", 3)[0], []).append(name)
            _scanned[folder] = groups
        names = groups.pop(final_name, [])
    return [folder / n for n in names]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def ensure_dir(path: Path) -> None:
    """``mkdir -p`` once per process (mkdir is slow on some virtual disks; skip known dirs)."""
    if path not in _made_dirs:
        path.mkdir(parents=True, exist_ok=True)
        _made_dirs.add(path)


def partial_dir(final: Path) -> Path:
    """Where temp files for ``final`` live: a small sibling folder on the same filesystem (so
    ``os.replace`` is atomic) that holds only in-flight downloads and a dead writer's leftovers,
    cheap to search for a resume even when the cache folder holds 100k objects."""
    path = final.parent / PARTIAL_DIR
    ensure_dir(path)
    return path


def rmdir_empty(path: Path, *, stop: Path) -> None:
    """Remove ``path`` and its parents up to ``stop`` while they are empty (after a failure)."""
    with contextlib.suppress(OSError):
        while path != stop and stop in path.parents:
            _made_dirs.discard(path)
            path.rmdir()
            path = path.parent


@contextlib.contextmanager
def removed_on_error(root: Path) -> Iterator[None]:
    """A cache root this block creates is removed again when the block fails: its lock file and
    its empty folders (a file that another process put there meanwhile keeps it, and the root)."""
    created = not root.exists()
    try:
        yield
    except BaseException:
        if created and root.is_dir():
            _remove_made(root)
        raise


def _remove_made(root: Path) -> None:
    fd = _fds.pop(root / LOCKS_DIR, None)
    if fd is not None:
        os.close(fd)  # no lock is held any more: the block that took them has ended
    with contextlib.suppress(FileNotFoundError):
        (root / LOCKS_DIR / RECORDS_FILE).unlink()
    for folder in sorted((Path(w[0]) for w in os.walk(root)), key=lambda p: -len(p.parts)):
        _made_dirs.discard(folder)
        with contextlib.suppress(OSError):
            folder.rmdir()


def forget_dir(path: Path) -> None:
    """``path`` may be gone (another writer removed it): the next ensure_dir makes it again."""
    _made_dirs.discard(path)
