"""The ``dest`` view: a COCO-layout tree whose files link into the cache, switched in atomically.

``dest`` is a symlink that staging owns, pointing at a complete view folder under
``<parent>/.<name>.staging-views/`` (each marked with VIEW_MARKER). A new view is built in a new
folder, then a temp symlink is ``os.replace``d over ``dest`` under a lock, so a reader sees the
old view or the new one, never a half-made one. An unchanged view (same key) is not rebuilt.
Staging never writes into, adopts or deletes a ``dest`` it did not make: an existing folder of
the user's (unless empty), a file, or a foreign symlink is refused with one line.
Inside a view a file is a hardlink to the cache (same inode), else a symlink, else a copy.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from errors import StagingError
from staging.paths import INCOMPLETE, short_hash

VIEW_MARKER = ".staging-view"  # in every view folder staging made (JSON: dest, key)
LEGACY_NAMES = ("annotations", "train2017", "val2017")  # what a pre-switch view held
LEGACY_ANN = re.compile(r"instances_(train|val)2017\.json")
VIEWS_SUFFIX = ".staging-views"
HARDLINK = "hardlink"
SYMLINK = "symlink"
COPY = "copy"
STALE_S = 3600.0  # an unfinished view folder this old has no live builder


@dataclass(frozen=True)
class Entry:
    """One name in the view: ``relpath`` names ``target`` (a cached file, or a source folder)."""

    relpath: str
    target: Path
    is_dir: bool = False


def views_dir(dest: Path) -> Path:
    """``<parent>/.<name>.staging-views``: where the view folders behind ``dest`` live."""
    return dest.parent / f".{dest.name}{VIEWS_SUFFIX}"


def check_dest(dest: Path, *, source: Path | None, cache: Path) -> None:
    """Refuse a dest that overlaps the source or the cache, or that staging did not make."""
    for field, other in (("source", source), ("cache", cache)):
        if other is not None:
            _refuse_overlap(dest, field, other)
    current_view(dest, cache=cache)


def _refuse_overlap(dest: Path, field: str, other: Path) -> None:
    d, o = Path(os.path.realpath(dest)), Path(os.path.realpath(other))
    how = "is the same folder as" if d == o else "lies inside" if o in d.parents else ""
    how = how or ("contains" if d in o.parents else "")
    if how:
        raise StagingError(
            f"data.dest {dest} {how} data.{field} {other}; choose a dest outside the source "
            "and the cache (staging replaces what is at dest)"
        )


def current_view(dest: Path, *, cache: Path | None = None) -> Path | None:
    """The staging-made view folder ``dest`` points at (``dest`` itself for a view made by an
    older staging, proven by ``cache``), None when ``dest`` is absent or an empty folder;
    StagingError (one line) for anything staging did not make."""
    if dest.is_symlink():
        target = Path(os.path.realpath(dest))
        if target.parent == Path(os.path.realpath(views_dir(dest))):
            if _is_view(target):
                return target
            if not os.path.lexists(target):
                return None  # ours, but its folder was removed: replace the link
        raise StagingError(
            f"data.dest {dest} is a symlink to {os.readlink(dest)} that staging did not make; "
            "remove it or choose another data.dest"
        )
    if dest.is_dir():
        with os.scandir(dest) as entries:
            if next(entries, None) is None:
                return None
        if cache is not None and _is_legacy_view(dest, cache):
            return dest
        raise StagingError(
            f"data.dest {dest} is an existing folder that staging did not make; staging never "
            "writes into or deletes your folders: choose a new path for data.dest"
        )
    if os.path.lexists(dest):
        raise StagingError(f"data.dest {dest} is a file; set data.dest to a folder path")
    return None


def _is_view(folder: Path) -> bool:
    return (folder / VIEW_MARKER).is_file()


def _is_legacy_view(dest: Path, cache: Path) -> bool:
    """A view that staging made before views were switched in (a real folder), proven by its
    content: only annotations/ with instances JSONs that are links into ``cache`` (same inode
    or a symlink), plus image folders that are symlinks or carry VIEW_MARKER."""
    names = set(os.listdir(dest))
    if "annotations" not in names or not names <= set(LEGACY_NAMES):
        return False
    anns = list((dest / "annotations").iterdir())
    if not anns or any(not LEGACY_ANN.fullmatch(a.name) for a in anns):
        return False
    real_cache = os.path.realpath(cache)
    cached = {(st.st_dev, st.st_ino) for st in map(os.stat, _cached_annotations(cache))}
    for ann in anns:
        if ann.is_symlink():
            if not os.path.realpath(ann).startswith(real_cache + os.sep):
                return False
        elif (ann.stat().st_dev, ann.stat().st_ino) not in cached:
            return False
    images = [dest / n for n in names - {"annotations"}]
    return all(p.is_symlink() or (p / VIEW_MARKER).is_file() for p in images)


def _cached_annotations(cache: Path) -> list[Path]:
    patterns = ("objects/*/*-instances_*2017.json", "derived/*/instances_*2017.json",
                "derived/*/annotations/instances_*2017.json")  # fmt: skip
    return [p for pattern in patterns for p in cache.glob(pattern)]


def build_view(dest: Path, entries: Sequence[Entry], *, cache: Path | None = None) -> bool:
    """Make ``dest`` show exactly ``entries``; return False when it already did (no change).
    ``cache`` lets a view made by an older staging (a real folder) be recognised and replaced."""
    from filelock import FileLock

    key = short_hash(*(f"{e.relpath}\0{e.target}\0{e.is_dir}" for e in entries))
    views = views_dir(dest)
    try:
        views.mkdir(parents=True, exist_ok=True)
        with FileLock(str(views / ".lock")):
            current = current_view(dest, cache=cache)
            if current is not None and current.name.startswith(f"{key}-"):
                return False
            folder = _make_view(views, key, dest, entries)
            if current == dest:  # an older staging's real folder: move it in with the views
                current = _retire_legacy(dest, views)
            _switch(dest, folder)
            _prune(views, keep={folder.name, current.name if current else ""})
    except OSError as err:
        where = f" ({err.filename})" if err.filename else ""
        raise StagingError(
            f"cannot build the data.dest view {dest}: {err.strerror}{where}; check that its "
            "parent folder is writable and has space"
        ) from err
    return True


def _make_view(views: Path, key: str, dest: Path, entries: Sequence[Entry]) -> Path:
    """A complete view folder (entries, then the marker), renamed into place only when done."""
    name = f"{key}-{uuid.uuid4().hex[:8]}"
    tmp = views / f"{name}{INCOMPLETE}"
    try:
        tmp.mkdir()
        made: set[Path] = {tmp}
        for e in entries:
            link = tmp / e.relpath
            if link.parent not in made:
                link.parent.mkdir(parents=True, exist_ok=True)
                made.add(link.parent)
            if e.is_dir:
                os.symlink(e.target, link, target_is_directory=True)
            else:
                link_file(e.target, link)
        (tmp / VIEW_MARKER).write_text(json.dumps({"dest": str(dest), "key": key}))
        os.rename(tmp, views / name)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return views / name


def link_file(target: Path, link: Path) -> str:
    """Make the new name ``link`` hold the bytes of ``target``; return how."""
    try:
        os.link(target, link)
        return HARDLINK
    except OSError:
        pass
    try:
        os.symlink(target, link)
        return SYMLINK
    except OSError:
        shutil.copyfile(target, link)
        return COPY


def _retire_legacy(dest: Path, views: Path) -> Path:
    """Move an older staging's real-folder view among the views (marked, so it is pruned)."""
    retired = views / f"legacy-{uuid.uuid4().hex[:8]}"
    os.rename(dest, retired)
    (retired / VIEW_MARKER).write_text(json.dumps({"dest": str(dest), "key": "legacy"}))
    return retired


def _switch(dest: Path, folder: Path) -> None:
    """Point ``dest`` at ``folder`` in one ``os.replace`` (an empty folder is removed first)."""
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}{INCOMPLETE}")
    os.symlink(os.path.relpath(folder, dest.parent), tmp, target_is_directory=True)
    try:
        if dest.is_dir() and not dest.is_symlink():
            dest.rmdir()  # only ever empty here (current_view refused anything else)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _prune(views: Path, *, keep: set[str]) -> None:
    """Delete older views (the one just replaced stays for readers still inside it) and
    unfinished ones whose builder is gone."""
    for entry in os.scandir(views):
        if entry.name in keep or not entry.is_dir(follow_symlinks=False):
            continue
        path = Path(entry.path)
        if entry.name.endswith(INCOMPLETE):
            if time.time() - entry.stat(follow_symlinks=False).st_mtime < STALE_S:
                continue
        elif not _is_view(path):
            continue  # not ours: leave it
        shutil.rmtree(path, ignore_errors=True)
