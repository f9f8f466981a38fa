"""The ``dest`` view: a COCO-layout tree whose files link into the cache.

Each entry is created under a unique temp name and ``os.replace``d into place, so a reader sees the
old entry or the new one, never a half-made one. Hardlink first (same inode, survives cache
eviction of the name), then symlink (another filesystem), then copy.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

from errors import StagingError
from staging.cache import ensure_dir
from staging.paths import INCOMPLETE

VIEW_MARKER = ".staging-view"  # in directories that staging made, so it may replace them
HARDLINK = "hardlink"
SYMLINK = "symlink"
COPY = "copy"


def link_file(target: Path, link: Path) -> str | None:
    """Make ``link`` name the same bytes as ``target``; return how, or None if already so."""
    with contextlib.suppress(OSError):
        if os.path.samefile(link, target):
            return None
    ensure_dir(link.parent)
    tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex[:8]}{INCOMPLETE}")
    try:
        how = _make(target, tmp)
        _replace(tmp, link)
        return how
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _make(target: Path, tmp: Path) -> str:
    try:
        os.link(target, tmp)
        return HARDLINK
    except OSError:
        pass
    try:
        os.symlink(target, tmp)
        return SYMLINK
    except OSError:
        shutil.copyfile(target, tmp)
        return COPY


def link_dir(target: Path, link: Path) -> bool:
    """Make ``link`` a symlink to the directory ``target``; True when it changed."""
    if link.is_symlink() and os.readlink(link) == str(target):
        return False
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex[:8]}{INCOMPLETE}")
    if not link.is_symlink() and (link / VIEW_MARKER).exists():
        with contextlib.suppress(FileNotFoundError):  # another process may have moved it
            os.rename(link, tmp)  # a per-file view from an earlier --with-images run
            shutil.rmtree(tmp)
    try:
        os.symlink(target, tmp)
        _replace(tmp, link)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def real_dir(path: Path) -> None:
    """Make ``path`` a real directory (replacing a symlink left by an earlier view)."""
    if path.is_symlink():
        path.unlink()
    path.mkdir(parents=True, exist_ok=True)
    (path / VIEW_MARKER).touch()


def _replace(tmp: Path, link: Path) -> None:
    try:
        os.replace(tmp, link)
    except IsADirectoryError as err:
        raise StagingError(
            f"data.dest entry {link} is a directory that staging did not make; move it away"
        ) from err
    except OSError as err:
        raise StagingError(f"cannot write data.dest entry {link}: {err.strerror}") from err
