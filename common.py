"""What every package may import, beside errors.py: one helper per idea that several of them need.

- ``REPO_ROOT``: the checkout (or context directory) this code runs from;
- ``cache_root()``: the project's per-user cache (``$MMDET_DET_CACHE``, default
  ``~/.cache/mmdet-determined``): ci/setup.sh's mmcv wheels, the built-in data set, parsed
  annotations of local COCO folders, the smoke's state, the benchmarks' data;
- ``free_ports(n)`` / ``free_port()``: currently free TCP ports on loopback;
- ``atomic_file(path)`` / ``write_atomic(path, data)`` / ``atomic_dir(path)``: a file or folder
  that appears complete or not at all (a unique temp beside it, renamed into place; a file
  optionally made durable first);
- ``file_sha256(path)``: a file's sha256, read in chunks;
- ``quiet_library_warnings()`` / ``quiet_prints()``: hide the libraries' notices and chatter that
  nobody running a verb can act on.

Stdlib only and importing nothing of the project, so images/, staging/, trial/, the benchmarks,
ci/ and the tests can all use it (ci/gpucheck.py runs before any wheel is installed).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import socket
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO

REPO_ROOT = Path(__file__).resolve().parent
# (message regex, category, module regex) of library warnings nobody running a verb can act on:
# setuptools' notice on importing mmengine/mmcv, google-api-core's Python support notice,
# mmengine's drawing of a box that leaves the image (predictions of an untrained model).
LIBRARY_NOISE = (
    ("pkg_resources is deprecated", UserWarning, ""),
    ("", FutureWarning, r"google\.api_core"),
    (r"Warning: The \w+ is out of bounds", UserWarning, ""),
)
CACHE_ENV = "MMDET_DET_CACHE"
LOOPBACK = "127.0.0.1"
INCOMPLETE = ".incomplete"


def cache_root() -> Path:
    """The project's per-user cache: ``$MMDET_DET_CACHE``, else ``~/.cache/mmdet-determined``."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "mmdet-determined"))


def free_ports(count: int, *, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct TCP ports free on ``host`` right now (all bound at once, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port(*, host: str = LOOPBACK) -> int:
    """A TCP port free on ``host`` right now."""
    return free_ports(1, host=host)[0]


def temp_path(path: Path) -> Path:
    """A unique temp name beside ``path``: ``.<name>.<uuid8>.incomplete`` (same filesystem, so
    ``os.replace`` is atomic; the suffix tells cleaners and readers to ignore it)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{INCOMPLETE}")


@contextlib.contextmanager
def atomic_file(
    path: str | Path, mode: str = "w", *, durable: bool = False, perms: int | None = None
) -> Iterator[IO]:
    """Yield a temp file beside ``path``; when the block succeeds it replaces ``path``, else it is
    deleted. A reader never sees a half-written file.

    ``durable``: fsync before the rename (a crash then leaves the old file or the whole new one).
    ``perms``: the file's mode; default 0666 less the umask, like ``open``.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        tmp.chmod(_default_perms() if perms is None else perms)
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_atomic(
    path: str | Path, data: bytes | str, *, durable: bool = False, perms: int | None = None
) -> None:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` through ``atomic_file``."""
    mode = "wb" if isinstance(data, bytes) else "w"
    with atomic_file(path, mode, durable=durable, perms=perms) as f:
        f.write(data)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a new temp folder beside ``path``; when the block succeeds it becomes ``path`` (which
    must not exist, or be an empty folder), else it is deleted with what it holds.

    Renaming onto a folder that is not empty raises OSError: a caller that races identical
    writers checks for the winner's result there."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    tmp.mkdir()
    try:
        yield tmp
        with contextlib.suppress(FileNotFoundError):
            if final.is_dir() and not any(final.iterdir()):
                final.rmdir()  # os.replace cannot replace a folder, even an empty one
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _default_perms() -> int:
    current = os.umask(0)
    os.umask(current)
    return 0o666 & ~current


def quiet_library_warnings() -> None:
    """Hide LIBRARY_NOISE in this process (every verb does; a local run's log keeps them)."""
    for message, category, module in LIBRARY_NOISE:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


def quiet_prints() -> contextlib.AbstractContextManager:
    """A block whose ``print``s go nowhere: libraries that print their progress instead of
    logging it (mmengine's "Loads checkpoint by ...", pycocotools' "loading annotations into
    memory...", Determined's "Preparing files to send to master...")."""
    return contextlib.redirect_stdout(io.StringIO())
