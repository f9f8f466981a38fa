"""The node-local cache: one write protocol for every object, correct even when locks no-op.

Write order for an object (see STYLE.md §4): (1) final path exists -> hit. (2) best-effort lock
under ``<cache>/.locks`` with a "still waiting" log, re-check (1). (3) free-space check.
(4) download into ``.partial/<name>.<host>-<pid>.<uuid8>.incomplete`` beside it (adopting a
dead writer's leftover to resume; a live writer's file is never touched). (5) verify size and crc32c (retry with backoff), make it durable (fsync,
grouped: staging/durable.py), validate content.
(6) chmod read-only, record the crc32c in an xattr, ``os.replace`` into place. (7) ``finally``:
delete our temp file.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import common
from errors import StagingError
from staging.durable import Committer, make_durable_one
from staging.paths import human_bytes, lock_path, object_path
from staging.stores.fetch import RETRIES, TempVanished, crc32c_b64, download_verified
from staging.stores.sources import CHUNK, ObjectInfo, Source
from staging.writers import (
    PARTIAL_DIR,
    adopt_leftover,
    discard_leftovers,
    ensure_dir,
    forget_dir,
    partial_dir,
    rmdir_empty,
    stripe_locked,
    temp_name,
)

log = logging.getLogger(__name__)

RESERVE_ENV = "STAGING_RESERVE_BYTES"
DEFAULT_RESERVE = 256 << 20
CRC_XATTR = "user.mmdet_staging.crc32c"
READ_ONLY = 0o444


@dataclass(frozen=True)
class Fetched:
    """The outcome for one object: where it is and whether this call downloaded it."""

    path: Path
    downloaded: bool
    size: int
    crc32c: str


def recorded_crc32c(path: Path) -> str:
    """The crc32c staging recorded with a cached object (an xattr set before its rename), or ''."""
    try:
        return os.getxattr(path, CRC_XATTR).decode()
    except OSError:
        return ""


def content_crc32c(path: Path) -> str:
    """What identifies a file's content: its recorded crc32c when it is a cached object, else the
    crc32c of its bytes."""
    return recorded_crc32c(path) or file_crc32c(path)


def file_crc32c(path: Path) -> str:
    """crc32c of a whole file (only for --verify and adopting a leftover temp file)."""
    import google_crc32c

    crc = google_crc32c.Checksum()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            crc.update(chunk)
    return crc32c_b64(crc)


def check_space(directory: Path, need: int) -> None:
    """Raise StagingError when ``need`` bytes plus the reserve do not fit in ``directory``."""
    reserve = int(os.environ.get(RESERVE_ENV, DEFAULT_RESERVE))
    probe = directory
    while True:
        try:
            st = os.statvfs(probe)
            break
        except FileNotFoundError:
            if probe == probe.parent:
                raise
            probe = probe.parent
    free = st.f_bavail * st.f_frsize
    if need + reserve > free:
        raise StagingError(
            f"not enough disk space in {directory}: need {human_bytes(need)} + reserve "
            f"{human_bytes(reserve)}, free {human_bytes(free)}; free space, point data.cache "
            f"elsewhere, or lower {RESERVE_ENV}"
        )


def check_cache_dir(root: Path) -> None:
    """The cache root exists (made here) and this user can write into it; else one line naming
    ``--cache``/``data.cache`` and the reason (read-only, a file, permission)."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise StagingError(f"--cache (data.cache) {root} is a file; point it at a directory")
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root, prefix=".probe."):
            pass
    except OSError as err:
        raise StagingError(
            f"--cache (data.cache) {root} is not a writable directory: {err.strerror or err}; "
            "point it at a folder this user can write (node-local disk)"
        ) from None


class Cache:
    """A cache root shared by every process on the node."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def final_path(self, info: ObjectInfo) -> Path:
        return object_path(self.root, info.url, info.ident)

    def lookup(self, info: ObjectInfo) -> Path | None:
        """The cached path for ``info`` if it is complete (metadata check only)."""
        path = self.final_path(info)
        return path if path.exists() else None

    def ensure(
        self,
        info: ObjectInfo,
        source: Source,
        *,
        validate: Callable[[Path], None] | None = None,
        verify: bool = False,
        on_bytes: Callable[[int], None] | None = None,
        final: Path | None = None,
        committer: Committer | None = None,
    ) -> Fetched | Pending:
        """Return the cached copy of ``info``, downloading it once if needed.

        ``final``: its cache path, passed by a caller that just found it missing (one
        ``stat`` and one path computation fewer per object). With a ``committer`` a download
        returns a Pending instead: the durable flush, rename and lock release happen there
        (staging/durable.py), so this thread can go on with its next object."""
        if final is None:
            final = self.final_path(info)
            hit = self._hit(final, info, verify=verify)
            if hit is not None:
                return hit
        ensure_dir(final.parent)
        with contextlib.ExitStack() as lock:
            lock.enter_context(self.locked(final))
            hit = None if verify else self._hit(final, info, verify=False)  # verify: known bad
            if hit is not None:
                return hit
            check_space(final.parent, info.size)
            job = _Job(info, source, final, validate, on_bytes, committer, lock)
            return self._fetch(job)

    def _hit(self, final: Path, info: ObjectInfo, *, verify: bool) -> Fetched | None:
        if not final.exists():
            return None
        expected = info.crc32c or recorded_crc32c(final)
        if verify:
            actual = file_crc32c(final)
            if actual != expected:
                log.warning(
                    "cached %s is corrupt (crc32c %s != %s); re-fetching", final, actual, expected
                )
                return None
        return Fetched(final, False, info.size, expected)

    def locked(self, final: Path) -> contextlib.AbstractContextManager[None]:
        """Best-effort lock for writers of ``final`` (staging/writers.py): it avoids duplicate
        downloads, but correctness never depends on it."""
        path = lock_path(self.root, final)
        ensure_dir(path.parent)
        return stripe_locked(path)

    @contextlib.contextmanager
    def building(self, final: Path) -> Iterator[None]:
        """Hold the lock of ``final``, a file built here from other files (not downloaded), with
        the temp files dead builders of it left removed (nothing to resume). Other processes
        wait, then find it complete; write it with ``write_object``."""
        ensure_dir(final.parent)
        with self.locked(final):
            discard_leftovers(final)
            yield

    def _fetch(self, job: _Job) -> Fetched | Pending:
        """Download into a temp file and rename it into place; if another writer (whose lock
        did nothing) removed our temp file, start again or take its finished result."""
        info, final = job.info, job.final
        for attempt in range(1, RETRIES + 1):
            try:
                return self._fetch_once(job)
            except TempVanished:
                forget_dir(final.parent / PARTIAL_DIR)
                if final.exists():
                    return Fetched(final, False, info.size, info.crc32c or "")
                log.warning("temp file of %s vanished (attempt %d/%d); another writer without a "
                            "working lock?", info.url, attempt, RETRIES)  # fmt: skip
        raise StagingError(
            f"{info.url}: temp files in {partial_dir(final)} kept vanishing; is another process "
            "deleting files in the cache?"
        )

    def _fetch_once(self, job: _Job) -> Fetched | Pending:
        info, final = job.info, job.final
        tmp = partial_dir(final) / temp_name(final)
        ok = False
        try:
            resume = adopt_leftover(final, tmp, resumable=bool(info.crc32c or info.verifiable))
            crc = download_verified(info, job.source, tmp, resume=resume, on_bytes=job.on_bytes)
            self._prepare(job, tmp, crc)
            if job.committer is not None:  # flush + rename in the committer; it owns the lock
                fut = job.committer.submit(
                    tmp, finish=functools.partial(self._finish_handed, job, tmp, crc),
                    abort=functools.partial(self._discard, tmp), release=job.lock.pop_all().close,
                )  # fmt: skip
                ok = True
                return Pending(fut, tmp, final)
            make_durable_one(tmp)  # a lone download (a run of them uses the committer)
            result = self._finish(job, tmp, crc)
            ok = True
            return result
        except FileNotFoundError as err:
            if not tmp.exists():
                raise TempVanished(str(tmp)) from err
            raise
        finally:
            if not ok:
                self._discard(tmp)

    def _prepare(self, job: _Job, tmp: Path, crc: str) -> None:
        """Validate the temp file, make it read-only, record its crc32c (before the flush)."""
        if job.validate is not None:
            job.validate(tmp)
        os.chmod(tmp, cached_mode(job.info))
        with contextlib.suppress(OSError):  # not every filesystem has user xattrs
            os.setxattr(tmp, CRC_XATTR, crc.encode())

    def _finish(self, job: _Job, tmp: Path, crc: str) -> Fetched:
        """Rename the prepared temp file into place (its data is durable by now)."""
        os.replace(tmp, job.final)  # the data was durable first: a visible final is complete
        return Fetched(job.final, True, job.info.size, crc)

    def _finish_handed(self, job: _Job, tmp: Path, crc: str) -> Fetched:
        try:
            return self._finish(job, tmp, crc)
        except FileNotFoundError as err:
            if tmp.exists() or not job.final.exists():
                raise StagingError(
                    f"{job.info.url}: its temp file {tmp} vanished before the rename; is another "
                    "process deleting files in the cache? rerun staging"
                ) from err
            return Fetched(job.final, False, job.info.size, crc)  # another writer finished it

    def _discard(self, tmp: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        rmdir_empty(tmp.parent, stop=self.root)


@dataclass(frozen=True)
class Pending:
    """A download handed to a committer: ``future`` gives its Fetched once it is durable and
    renamed; until then its verified bytes can be read from ``tmp`` (then from ``final``)."""

    future: Future
    tmp: Path
    final: Path

    def read_bytes(self) -> bytes:
        """The object's bytes, whether or not the rename has happened yet (same inode)."""
        try:
            with open(self.tmp, "rb") as f:
                return f.read()
        except FileNotFoundError:
            with open(self.final, "rb") as f:
                return f.read()


@dataclass(frozen=True)
class _Job:
    """One download: what, from where, to which final path, and how it is finished."""

    info: ObjectInfo
    source: Source
    final: Path
    validate: Callable[[Path], None] | None
    on_bytes: Callable[[int], None] | None
    committer: Committer | None
    lock: contextlib.ExitStack


def cached_mode(info: ObjectInfo) -> int:
    """Read-only, and never more readable than the source file was (0600 -> 0400)."""
    return READ_ONLY if info.mode is None else READ_ONLY & info.mode


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644, durable: bool = True) -> None:
    """Write ``data`` to ``path`` through a unique temp file, fsync and ``os.replace`` (common.py);
    a failure is one StagingError line.

    ``durable=False`` skips the fsync for advisory files (the object sidecar): a reader that
    finds it empty after a power loss treats it as missing.
    """
    try:
        common.write_atomic(path, data, durable=durable, perms=mode)
    except OSError as err:
        raise StagingError(
            f"cannot write {path}: {err.strerror or err}; free space in {path.parent} or point "
            "data.cache elsewhere (nothing was changed)"
        ) from err


@contextlib.contextmanager
def write_object(final: Path, *, size: int) -> Iterator[BinaryIO]:
    """Write ``final``, a file built here (not downloaded), with the cache's protocol (STYLE.md
    §4): free space for ``size`` bytes checked, a unique temp file in ``.partial/`` yielded, then
    made durable and read-only and renamed into place. A failure leaves nothing at ``final``."""
    check_space(final.parent, size)
    tmp = partial_dir(final) / temp_name(final)
    try:
        with open(tmp, "wb") as f:
            yield f
        make_durable_one(tmp)
        os.chmod(tmp, READ_ONLY)
        os.replace(tmp, final)  # the data was durable first: a visible final is complete
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
