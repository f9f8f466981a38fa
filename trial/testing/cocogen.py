"""A deterministic COCO-scale annotation set (train2017's 118,287 images and 860,001 annotations
at scale 1) for ``invoke bench startup`` and the annotation-cache tests.

Real COCO's shape, not its pictures: its 80 categories with their ids, its image sizes, 8-40
vertex polygons, ~1 % crowd regions in uncompressed RLE, a few degenerate boxes that mmdet's
parser drops and images without annotations that ``filter_empty_gt`` drops. Every image file
name links to one of a few real JPEGs of the right size, so a training step can load any of them.

Fast because the numbers are drawn and printed by numpy: every value of the file is formatted
into one byte buffer at once (``_decimal_text``), and Python only glues one record per image or
annotation. The set is built in a temp folder and renamed into place with a ``.complete`` marker.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from common import atomic_dir

VERSION = "coco-scale-v1"
TRAIN = (118_287, 860_001)  # images, annotations of COCO train2017
VAL = (5_000, 36_781)  # of val2017
SIZES = np.array([(640, 480), (480, 640), (640, 427), (427, 640), (640, 426), (500, 375),
                  (640, 640), (612, 612)])  # fmt: skip
CROWD_FRACTION = 0.01
TINY_FRACTION = 0.005  # boxes under 1 px wide: mmdet's parser drops them
MAX_IMAGE_ID = 600_000
COMPLETE = ".complete"
ANN_CHUNK = 20_000  # annotations drawn and formatted at a time (bounds the memory)


def make_coco_scale(root: Path, *, scale: float = 1.0, seed: int = 0) -> Path:
    """Generate ``root`` (COCO 2017 layout) unless it is complete; identical args, identical bytes."""
    root = Path(root)
    if (root / COMPLETE).exists():
        return root
    try:
        with atomic_dir(root) as tmp:
            (tmp / "annotations").mkdir(parents=True)
            for offset, (split, (images, anns)) in enumerate((("train", TRAIN), ("val", VAL))):
                counts = (max(1, round(images * scale)), max(1, round(anns * scale)))
                ids = write_split(tmp, split, *counts, seed=seed * 1000 + offset)
                _link_images(tmp, split, ids)
            (tmp / COMPLETE).write_text(f"{VERSION} scale={scale} seed={seed}\n")
    except OSError:
        if not (root / COMPLETE).exists():  # lost a race to an identical writer: fine
            raise
    return root


def write_split(root: Path, split: str, n_images: int, n_anns: int, *, seed: int) -> np.ndarray:
    """Write ``annotations/instances_<split>2017.json``; return each image's (id, size index)."""
    from trial.runtime.shapes import coco_categories

    rng = np.random.default_rng(seed)
    image_ids = np.sort(rng.choice(MAX_IMAGE_ID, size=n_images, replace=False)) + 1
    size_index = rng.integers(len(SIZES), size=n_images)
    per_image = rng.multinomial(n_anns, _normalised(rng.gamma(5.0, size=n_images)))
    owner = np.repeat(np.arange(n_images), per_image)
    categories = coco_categories()
    category_ids = np.array([c["id"] for c in categories])
    path = root / "annotations" / f"instances_{split}2017.json"
    with open(path, "wb") as f:
        f.write(b'{"info":{"description":"mmdet-determined %s","version":"%s"},"licenses":'
                b'[{"id":1,"name":"CC0 1.0","url":"https://creativecommons.org/publicdomain/zero/1.0/"}],'
                % (VERSION.encode(), VERSION.encode()))  # fmt: skip
        f.write(b'"images":[')
        _write_joined(f, _image_records(image_ids, SIZES[size_index], split))
        f.write(b'],"annotations":[')
        records = _annotation_records(rng, image_ids[owner], SIZES[size_index][owner], category_ids)
        _write_joined(f, records)
        f.write(b'],"categories":%s}' % json.dumps(categories).encode())
    return np.stack([image_ids, size_index], axis=1)


def _write_joined(f, records: Iterable[bytes]) -> None:
    for i, record in enumerate(records):
        if i:
            f.write(b",")
        f.write(record)


def _normalised(weights: np.ndarray) -> np.ndarray:
    return weights / weights.sum()


def _image_records(ids: np.ndarray, sizes: np.ndarray, split: str) -> Iterator[bytes]:
    folder = f"{split}2017".encode()
    return (
        b'{"license":1,"file_name":"%012d.jpg","coco_url":"http://images.cocodataset.org/%s/'
        b'%012d.jpg","height":%d,"width":%d,"date_captured":"2013-11-14 11:18:45","id":%d}'
        % (i, folder, i, h, w, i)
        for i, (w, h) in zip(ids.tolist(), sizes.tolist(), strict=True)
    )


def _annotation_records(
    rng: np.random.Generator, image_of: np.ndarray, size_of: np.ndarray, category_ids: np.ndarray
) -> Iterator[bytes]:
    """One JSON record per annotation (ids 1..n), drawn ANN_CHUNK at a time."""
    for lo in range(0, len(image_of), ANN_CHUNK):
        hi = lo + ANN_CHUNK
        yield from _annotation_chunk(rng, image_of[lo:hi], size_of[lo:hi], category_ids, lo + 1)


def _annotation_chunk(
    rng: np.random.Generator, image_of: np.ndarray, size_of: np.ndarray, category_ids: np.ndarray,
    first_id: int,
) -> Iterator[bytes]:  # fmt: skip
    """One JSON record per annotation, every number drawn and formatted vectorised."""
    n = len(image_of)
    width, height = size_of[:, 0], size_of[:, 1]
    bw = np.maximum(1.0, width * rng.beta(1.3, 4.0, size=n))
    bh = np.maximum(1.0, height * rng.beta(1.3, 4.0, size=n))
    tiny = rng.random(n) < TINY_FRACTION
    bw[tiny] = rng.uniform(0.2, 0.95, size=int(tiny.sum()))
    x, y = rng.random(n) * (width - bw), rng.random(n) * (height - bh)
    crowd = rng.random(n) < CROWD_FRACTION
    box = _decimal_text(np.round(np.stack([x, y, bw, bh], 1) * 100).ravel(), 2)
    area = _decimal_text(np.round(bw * bh * rng.uniform(0.4, 0.9, n) * 100), 2)
    poly_text, poly_ends, poly_first = _polygons(rng, x, y, bw, bh, ~crowd)
    rle_text, rle_ends, rle_first = _rle_counts(rng, width, height, crowd)
    category_of = category_ids[rng.integers(len(category_ids), size=n)]
    rank = np.where(crowd, np.cumsum(crowd), np.cumsum(~crowd)) - 1  # index among its kind
    columns = zip(crowd.tolist(), rank.tolist(), image_of.tolist(), category_of.tolist(),
                  width.tolist(), height.tolist(), strict=True)  # fmt: skip
    for i, (is_crowd, k, image_id, category_id, w, h) in enumerate(columns):
        if is_crowd:
            counts = _values(rle_text, rle_ends, rle_first[k], rle_first[k + 1])
            seg = b'{"counts":[%b],"size":[%d,%d]}' % (counts, h, w)
        else:
            seg = b"[[%b]]" % _values(poly_text, poly_ends, poly_first[k], poly_first[k + 1])
        yield (
            b'{"segmentation":%b,"area":%b,"iscrowd":%d,"image_id":%d,"bbox":[%b],'
            b'"category_id":%d,"id":%d}'
            % (seg, _values(*area, i, i + 1), is_crowd, image_id, _values(*box, 4 * i, 4 * i + 4),
               category_id, first_id + i)
        )  # fmt: skip


def _polygons(rng, x, y, bw, bh, keep) -> tuple[bytes, np.ndarray, list[int]]:
    """8-40 vertices on a jittered ellipse inside each kept box: (text, value ends, first value
    of each polygon and one past the last)."""
    vertices = rng.integers(8, 41, size=int(keep.sum()))
    owner = np.repeat(np.arange(len(vertices)), vertices)
    first = np.concatenate([[0], np.cumsum(vertices)])
    angle = 2 * np.pi * (np.arange(len(owner)) - first[owner]) / vertices[owner]
    radius = rng.uniform(0.7, 1.0, size=len(owner))
    half_w, half_h = (bw / 2)[keep][owner] * radius, (bh / 2)[keep][owner] * radius
    px = (x + bw / 2)[keep][owner] + half_w * np.cos(angle)
    py = (y + bh / 2)[keep][owner] + half_h * np.sin(angle)
    text, ends = _decimal_text(np.round(np.stack([px, py], 1) * 100).ravel(), 2)
    return text, ends, (2 * first).tolist()


def _rle_counts(rng, width, height, crowd) -> tuple[bytes, np.ndarray, list[int]]:
    """Uncompressed RLE counts (alternating runs summing to height*width) per crowd region."""
    runs = rng.integers(1, 11, size=int(crowd.sum())) * 2 + 1
    owner = np.repeat(np.arange(len(runs)), runs)
    first = np.concatenate([[0], np.cumsum(runs)])
    values = rng.integers(1, 400, size=len(owner))
    last = first[1:] - 1
    values[last] = 0
    values[last] = (height * width)[crowd] - np.bincount(owner, weights=values).astype(np.int64)
    text, ends = _decimal_text(values, 0)
    return text, ends, first.tolist()


def _values(text: bytes, ends: np.ndarray, first: int, stop: int) -> bytes:
    """Values ``first .. stop-1`` of a ``_decimal_text`` buffer, comma-joined."""
    begin = int(ends[first - 1]) if first else 0
    return text[begin : int(ends[stop - 1]) - 1]  # without the trailing comma


def _decimal_text(values: np.ndarray, decimals: int) -> tuple[bytes, np.ndarray]:
    """Non-negative fixed-point ``values`` (in units of 10**-decimals) as decimal text, each
    followed by a comma, all in one buffer; and the end offset of each value's text. A
    fixed-width character matrix is filled digit by digit, then leading zeros are dropped."""
    whole, frac = np.divmod(np.asarray(values, dtype=np.int64), 10**decimals)
    int_width = len(str(int(whole.max()))) if len(whole) else 1
    digits = np.ones(len(whole), dtype=np.int64)
    for k in range(1, int_width):
        digits += whole >= 10**k
    width = int_width + (decimals + 1 if decimals else 0) + 1
    chars = np.empty((len(whole), width), dtype=np.uint8)
    for j in range(int_width):
        chars[:, j] = 48 + (whole // 10 ** (int_width - 1 - j)) % 10
    if decimals:
        chars[:, int_width] = ord(".")
        for j in range(decimals):
            chars[:, int_width + 1 + j] = 48 + (frac // 10 ** (decimals - 1 - j)) % 10
    chars[:, -1] = ord(",")
    keep = np.ones(chars.shape, dtype=bool)
    keep[:, :int_width] = np.arange(int_width)[None, :] >= (int_width - digits)[:, None]
    return chars[keep].tobytes(), np.cumsum(digits + (width - int_width))


def _link_images(root: Path, split: str, ids: np.ndarray) -> None:
    """``<split>2017/<id>.jpg`` for every image: a symlink to a real JPEG of its size."""
    from PIL import Image

    pool = root / "pool"
    pool.mkdir(exist_ok=True)
    for k, (w, h) in enumerate(SIZES.tolist()):
        picture = pool / f"{w}x{h}.jpg"
        if not picture.exists():
            pixels = np.random.default_rng(k).integers(0, 255, size=(h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(picture, quality=80)
    folder = root / f"{split}2017"
    folder.mkdir()
    names = [f"../pool/{w}x{h}.jpg" for w, h in SIZES.tolist()]
    for image_id, k in ids.tolist():
        os.symlink(names[k], folder / f"{image_id:012d}.jpg")
