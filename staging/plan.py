"""Pure planning: from a source listing to the list of Transfers that stage a COCO split.

No I/O here: listings come in, frozen Transfers go out; ``--dry-run`` prints exactly these.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from errors import StagingError
from staging.coco import ARCHIVE, ann_relpath, image_dir
from staging.paths import SourceRef, human_bytes, object_path
from staging.stores.sources import ObjectInfo

ANNOTATION = "annotation"
ARCHIVE_KIND = "archive"
IMAGE = "image"


@dataclass(frozen=True)
class Transfer:
    """One object to bring into the cache, and what it is for."""

    info: ObjectInfo
    final: Path
    kind: str
    split: str = ""


def plan_annotations(
    ref: SourceRef, listing: Sequence[ObjectInfo], splits: Sequence[str], *, cache_root: Path
) -> list[Transfer]:
    """Instances JSON per split, or the trainval zip when a JSON is missing and the zip exists."""
    by_path = {o.relpath: o for o in listing}
    missing = [s for s in splits if ann_relpath(s) not in by_path]
    if missing and ARCHIVE in by_path:
        info = by_path[ARCHIVE]
        return [Transfer(info, object_path(cache_root, info.url, info.ident), ARCHIVE_KIND)]
    if missing:
        raise StagingError(
            f"missing object {ref.object_url(ann_relpath(missing[0]))} (and no "
            f"{ref.object_url(ARCHIVE)}); check data.source and data.splits"
        )
    out = []
    for split in splits:
        info = by_path[ann_relpath(split)]
        out.append(Transfer(info, object_path(cache_root, info.url, info.ident), ANNOTATION, split))
    return out


def plan_images(
    ref: SourceRef,
    listing: Sequence[ObjectInfo],
    split: str,
    *,
    cache_root: Path,
    wanted: Iterable[str] | None = None,
    ann_label: str = "",
) -> list[Transfer]:
    """Transfers for the split's images: all of them, or only ``wanted`` file names (subset)."""
    folder = image_dir(split)
    by_name = {o.relpath[len(folder) + 1 :]: o for o in listing}
    names = sorted(by_name) if wanted is None else list(wanted)
    out = []
    for name in names:
        info = by_name.get(name)
        if info is None:
            raise StagingError(
                f"{ann_label or 'the annotations'} name image {name!r}, but "
                f"{ref.object_url(f'{folder}/{name}')} does not exist; upload it or fix the JSON"
            )
        out.append(Transfer(info, object_path(cache_root, info.url, info.ident), IMAGE, split))
    return out


def describe(transfers: Sequence[Transfer], cached: Sequence[bool]) -> list[str]:
    """Dry-run lines: one per transfer (fetch or cached) and a total."""
    lines = [
        f"{'cached' if hit else 'fetch '} {t.kind:<10} {human_bytes(t.info.size):>9}  {t.info.url}"
        for t, hit in zip(transfers, cached, strict=True)
    ]
    need = sum(t.info.size for t, hit in zip(transfers, cached, strict=True) if not hit)
    lines.append(
        f"{len(transfers)} objects, {sum(cached)} cached, {len(transfers) - sum(cached)} to fetch "
        f"({human_bytes(need)})"
    )
    return lines
