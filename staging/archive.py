"""annotations_trainval2017.zip -> a directory in the cache, complete only once its marker exists.

Protocol: extract into ``<dir>.<uuid8>.incomplete``, validate, write ``.complete`` (the manifest
of extracted files) last, then rename the directory into place. Readers trust ``.complete``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
import zipfile
from collections.abc import Sequence
from pathlib import Path

from errors import CorruptDataError, StagingError
from staging.cache import READ_ONLY, Cache, Fetched, check_space, write_atomic
from staging.coco import SPLITS_IN_ARCHIVE, ann_relpath, check_coco_file
from staging.paths import INCOMPLETE, check_relpath, derived_path
from staging.plan import ARCHIVE_KIND, Transfer

MARKER = ".complete"


def annotation_files(
    cache: Cache, plan: Sequence[Transfer], done: Sequence[Fetched], splits: Sequence[str]
) -> dict[str, tuple[Path, str]]:
    """split -> (annotation JSON path in the cache, label); extracts the archive when needed."""
    if plan and plan[0].kind == ARCHIVE_KIND:
        zip_t, zip_f = plan[0], done[0]
        final_dir = derived_path(
            cache.root, f"archive|{zip_t.info.url}|{zip_t.info.ident}", "extracted"
        )
        with cache.locked(final_dir):
            extract_annotations(zip_f.path, final_dir, label=zip_t.info.url)
        out = {}
        for split in splits:
            path = archive_member(final_dir, split)
            if path is None:
                raise StagingError(
                    f"{zip_t.info.url} has no {ann_relpath(split)}; check data.splits"
                )
            out[split] = (path, f"{zip_t.info.url}:{ann_relpath(split)}")
        return out
    return {t.split: (f.path, t.info.url) for t, f in zip(plan, done, strict=True)}


def extract_annotations(zip_path: Path, final_dir: Path, *, label: str) -> Path:
    """Extract the instances JSON files of ``zip_path`` into ``final_dir`` (once); return it."""
    if (final_dir / MARKER).exists():
        return final_dir
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = final_dir.with_name(f"{final_dir.name}.{uuid.uuid4().hex[:8]}{INCOMPLETE}")
    try:
        names = _extract(zip_path, tmp, label=label)
        manifest = {"archive": label, "files": names}
        write_atomic(tmp / MARKER, json.dumps(manifest).encode())
        try:
            os.rename(tmp, final_dir)
        except OSError:
            if not (final_dir / MARKER).exists():  # lost a race only if the winner completed
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final_dir


def _extract(zip_path: Path, out: Path, *, label: str) -> list[str]:
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as err:
        raise CorruptDataError(f"{label} is not a valid zip archive ({err}); re-upload it") from err
    with zf:
        wanted = {ann_relpath(s) for s in SPLITS_IN_ARCHIVE}
        members = [m for m in zf.infolist() if m.filename in wanted]
        for m in zf.infolist():
            check_relpath(m.filename.rstrip("/"), what=label)
        if not members:
            raise StagingError(
                f"{label} holds none of {sorted(wanted)}; is it annotations_trainval2017.zip?"
            )
        check_space(out.parent, sum(m.file_size for m in members))
        names = []
        for m in members:
            dest = out / m.filename
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(m) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
                os.fsync(dst.fileno())
            check_coco_file(dest, label=f"{label}:{m.filename}")
            dest.chmod(READ_ONLY)
            names.append(m.filename)
    return sorted(names)


def archive_member(final_dir: Path, split: str) -> Path | None:
    """The extracted instances file for ``split`` if the archive held it."""
    path = final_dir / ann_relpath(split)
    with contextlib.suppress(OSError):
        if path.is_file():
            return path
    return None
