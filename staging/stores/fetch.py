"""One object's bytes into a temp file, exactly: resume, retries with backoff, size + checksum.

The crc32c (the cache's own record) and byte count always describe exactly what the temp file
holds: if the file is not the length we wrote (another writer, whose lock did nothing, removed or
adopted it), it is started over instead of being trusted. The source's checksum is the listed
crc32c (GCS) or one the source names while it streams (S3: its additional checksum, else the MD5
ETag; ``Writer.expect``); it is checked over the whole file, resumed parts included.
"""

from __future__ import annotations

import base64
import errno
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path

from errors import CorruptDataError, StagingError
from staging.stores import checksums
from staging.stores.sources import CHUNK, ObjectInfo, Source, is_transient

log = logging.getLogger(__name__)

RETRIES = 5
BACKOFF_INITIAL_S = 0.1
BACKOFF_MAX_S = 2.0


class TempVanished(Exception):
    """Our temp file was removed under us (only possible when the lock did nothing)."""


def crc32c_b64(checksum) -> str:
    """google_crc32c.Checksum -> base64 big-endian, the way GCS reports it."""
    return base64.b64encode(checksum.digest()).decode()


class _Written:
    """What the temp file holds so far: byte count, running crc32c, and the running checksum of
    the algorithm the source vouches for (when it named one)."""

    def __init__(self) -> None:
        import google_crc32c

        self.crc = google_crc32c.Checksum()
        self.nbytes = 0
        self.expected: tuple[str, str] | None = None
        self._other = None  # running checksum of expected[0] when that is not crc32c

    def add(self, data: bytes) -> None:
        self.crc.update(data)
        if self._other is not None:
            self._other.update(data)
        self.nbytes += len(data)

    def expect(self, algorithm: str, value: str, prefix: Path) -> None:
        """Check ``algorithm`` == ``value`` at the end; hash the ``prefix`` file's bytes written
        so far (a resumed download whose checksum the source names only now)."""
        self.expected = (algorithm, value)
        if algorithm == "crc32c":
            return
        self._other = checksums.new(algorithm)
        if self.nbytes:
            with open(prefix, "rb") as f:
                left = self.nbytes
                while left and (chunk := f.read(min(CHUNK, left))):
                    self._other.update(chunk)
                    left -= len(chunk)

    def mismatch(self, crc32c: str) -> str:
        """'' when the expected checksum holds, else what differs (for the error line)."""
        if self.expected is None:
            return ""
        algorithm, want = self.expected
        got = crc32c if self._other is None else self._other.value()
        return "" if got == want else f"{algorithm} {got} != {want}"


class _HashingWriter:
    """Writes to a file and records exactly those bytes (and reports progress)."""

    def __init__(self, f, state: _Written, on_bytes: Callable[[int], None] | None, path: Path):
        self.f, self.state, self.on_bytes, self.path = f, state, on_bytes, path

    @property
    def expected(self) -> tuple[str, str] | None:
        return self.state.expected

    def expect(self, algorithm: str, value: str) -> None:
        self.f.flush()
        self.state.expect(algorithm, value, self.path)

    def write(self, data) -> int:
        data = bytes(data) if isinstance(data, memoryview) else data
        self.f.write(data)
        self.state.add(data)
        if self.on_bytes is not None:
            self.on_bytes(len(data))
        return len(data)


def download_verified(
    info: ObjectInfo, source: Source, tmp: Path, *, resume: bool, on_bytes=None
) -> str:
    """Fill ``tmp`` with exactly the object's bytes; return its crc32c. Retries transient errors."""
    state = _Written()
    if resume:
        with open(tmp, "rb") as f:
            while chunk := f.read(CHUNK):
                state.add(chunk)
    delays = _backoff()
    for attempt in range(1, RETRIES + 1):
        try:
            _one_attempt(info, source, tmp, state, on_bytes)
            return _checked(info, tmp, state)
        except Exception as err:
            if not is_transient(err) or attempt == RETRIES:
                _raise_final(info, attempt, err)
            first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            log.warning("retrying %s (attempt %d/%d): %s", info.url, attempt + 1, RETRIES, first)
            if isinstance(err, CorruptDataError) or state.nbytes > info.size:
                tmp.unlink(missing_ok=True)  # bad bytes somewhere: start over
                state = _Written()
            time.sleep(next(delays))
    raise AssertionError("unreachable")


def _backoff():
    """Sleeps between attempts: BACKOFF_INITIAL_S doubling up to BACKOFF_MAX_S, jittered."""
    delay = BACKOFF_INITIAL_S
    while True:
        yield min(random.uniform(0.0, delay * 2), BACKOFF_MAX_S)
        delay *= 2


def _one_attempt(info: ObjectInfo, source: Source, tmp: Path, state: _Written, on_bytes) -> None:
    if state.nbytes and _size(tmp) != state.nbytes:  # not what we wrote: removed or adopted
        raise TempVanished(str(tmp))
    if state.nbytes >= info.size > 0:  # all in (a dead writer's leftover): vet it as a whole
        checksum_of = getattr(source, "checksum_of", None)
        if state.expected is None and checksum_of is not None:
            found = checksum_of(info)
            if found is not None:
                state.expect(*found, tmp)
        return
    try:
        f = open(tmp, "ab")  # noqa: SIM115 - closed below; opening is what may fail
    except FileNotFoundError as err:  # .partial/ removed by a failing writer next door
        raise TempVanished(str(tmp)) from err
    with f:
        source.read_into(info, _HashingWriter(f, state, on_bytes, tmp), start=state.nbytes)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _checked(info: ObjectInfo, tmp: Path, state: _Written) -> str:
    if _size(tmp) != state.nbytes:
        raise TempVanished(str(tmp))
    if state.nbytes != info.size:
        raise CorruptDataError(f"{info.url}: got {state.nbytes} bytes, expected {info.size}")
    actual = crc32c_b64(state.crc)
    if info.crc32c and actual != info.crc32c:
        raise CorruptDataError(f"{info.url}: crc32c {actual} != {info.crc32c} from the source")
    differs = state.mismatch(actual)
    if differs:
        raise CorruptDataError(f"{info.url}: {differs} from the source")
    return actual


def _raise_final(info: ObjectInfo, attempt: int, err: Exception) -> None:
    if isinstance(err, TempVanished):
        raise err
    if isinstance(err, StagingError) and not isinstance(err, CorruptDataError):
        raise err
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        raise StagingError(
            f"no space left on the cache's disk while writing {info.url}; free space or point "
            "data.cache elsewhere (the cache is unchanged)"
        ) from err
    first = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
    cls = CorruptDataError if isinstance(err, CorruptDataError) else StagingError
    raise cls(
        f"giving up on {info.url} after {attempt} attempt(s): {first}; the cache is unchanged, "
        "check the network or the source object and rerun"
    ) from err
