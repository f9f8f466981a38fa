"""The per-node parsed-annotations cache: a dataset's serialized ``data_list``, built once per node
and memory-mapped read-only by every rank and DataLoader worker (their pages are shared through
the page cache).

One file per key, ``<cache>/derived/<hash of key>/<annotation stem>.anncache``, written with the
node cache's protocol (staging): under the object's lock, into a unique temp file beside it, made
durable, then renamed into place, so a reader sees a complete file or none, and a build killed
half-way leaves nothing at the final path (its temp file is removed by the next builder). Ranks
that find no file wait on the lock while one of them builds, then map what it wrote. Correctness
never depends on the lock: without it each rank builds and the last rename wins (same bytes).

The key names everything that shapes the list (see ``annotation_identity`` and the dataset
class's ``cache_key``); the file repeats it in its header with its length and crc32, all checked
on open, so a stale, truncated or corrupt file is rebuilt and never used.

File layout: MAGIC, header length (u64), header crc32 (u32), 4 zero bytes, the JSON header, then
64-byte aligned sections: ``data_address`` (int64), ``data_bytes`` (uint8) and pickled attributes
(e.g. ``cat_ids``), each named with its [offset, length] in the header.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import pickle
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from errors import ProjectError
from staging.cache import Cache, content_crc32c, write_object
from staging.paths import derived_path

log = logging.getLogger("trial.anncache")

MAGIC = b"MMDET-ANNCACHE1\n"
PREFIX = struct.Struct("<16sQII")  # magic, header length, header crc32, reserved
ALIGN = 64
SUFFIX = ".anncache"
VERIFY_CHUNK = 8 << 20
LAZY_BYTES = 1 << 20  # attributes pickled larger than this load on first use (cat_img_map)


@dataclass(frozen=True)
class Parsed:
    """A serialized dataset: mmengine's ``data_bytes``/``data_address`` plus the attributes its
    ``full_init`` set (small ones already loaded; large ones as loaders, see LAZY_BYTES)."""

    data_bytes: np.ndarray
    data_address: np.ndarray
    attrs: Mapping[str, Any]
    lazy: Mapping[str, LazyAttr] = field(default_factory=dict)
    path: Path | None = None

    def __reduce__(self):
        """Pickle a mapped entry by reference: a spawned DataLoader worker maps the file again
        instead of receiving a copy of every byte (datasets keep only mapped entries)."""
        if self.path is None:
            raise TypeError("only a mapped parsed-annotations entry can be pickled")
        return (_reopen, (str(self.path),))


@dataclass(frozen=True)
class LazyAttr:
    """One pickled attribute in a cache file, read when first used."""

    path: str
    offset: int
    length: int

    def load(self) -> Any:
        with open(self.path, "rb") as f:
            return pickle.loads(os.pread(f.fileno(), self.length, self.offset))


def annotation_identity(path: str | Path) -> dict[str, Any]:
    """What identifies an annotation file's content: size, mtime and crc32c. A staged file
    carries its verified crc32c in an xattr (staging/cache.py); any other file is hashed."""
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "crc32c": content_crc32c(Path(path))}


def cache_path(cache_root: str | Path, key: str, ann_file: str | Path) -> Path:
    """The one mapping from a key (canonical JSON) to its cache file."""
    return derived_path(Path(cache_root), key, Path(ann_file).stem + SUFFIX)


def load_or_build(final: Path, key: str, build: Callable[[], Parsed], *, root: Path) -> Parsed:
    """The mapped entry at ``final`` when it is complete and matches ``key``; else build it once
    (other processes wait on the lock, then map it). A cache that cannot be written (disk full,
    read-only) costs only the saving: the built, unmapped entry is returned."""
    found = open_entry(final, key)
    if found is not None:
        return found
    with Cache(root).building(final):  # best effort: correctness never needs the lock
        found = open_entry(final, key)
        if found is not None:
            log.info("parsed annotations: another process built %s; mapped it", final)
            return found
        built = build()
        try:
            write_entry(final, key, built)
        except (OSError, ProjectError, pickle.PicklingError) as err:
            log.warning("parsed annotations not cached (%s); this process keeps its own copy",
                        err)  # fmt: skip
            return built
    log.info("parsed annotations: built and cached %s", final)
    return open_entry(final, key, verify=False) or built


def write_entry(final: Path, key: str, parsed: Parsed) -> None:
    """Write ``parsed`` to ``final`` with the node cache's protocol (staging.cache.write_object:
    temp file, durable, read-only, rename; STYLE.md §4)."""
    blobs = {name: pickle.dumps(value, protocol=4) for name, value in parsed.attrs.items()}
    small = {k: v for k, v in parsed.attrs.items() if len(blobs[k]) <= LAZY_BYTES}
    sections: list[tuple[str, Any]] = [
        ("data_address", np.ascontiguousarray(parsed.data_address, dtype=np.int64)),
        ("data_bytes", np.ascontiguousarray(parsed.data_bytes, dtype=np.uint8)),
        ("attrs", pickle.dumps(small, protocol=4)),
        *((f"lazy:{k}", b) for k, b in blobs.items() if k not in small),
    ]
    header = _layout(key, sections, count=len(parsed.data_address))
    with write_object(final, size=header["size"]) as f:
        head = json.dumps(header, sort_keys=True).encode()
        f.write(PREFIX.pack(MAGIC, len(head), zlib.crc32(head), 0) + head)
        for name, data in sections:
            f.seek(header["sections"][name][0])
            f.write(memoryview(data).cast("B"))
        f.truncate(header["size"])


def _layout(key: str, sections: list[tuple[str, Any]], *, count: int) -> dict:
    """The header: where each section goes (64-byte aligned), the total size and the crc32
    of the payload (sections and the zero padding between them)."""
    crc, placed, end = 0, {}, 0  # offsets relative to the payload's start
    for name, data in sections:
        view = memoryview(data).cast("B")
        crc = zlib.crc32(view, zlib.crc32(bytes(_pad(end) - end), crc))
        placed[name], end = (_pad(end), view.nbytes), _pad(end) + view.nbytes
    header: dict[str, Any] = {"format": 1, "key": key, "count": count, "payload_crc32": crc}
    start = 0  # the payload's start depends on the header's length: settle it (2-3 rounds)
    while True:
        header["sections"] = {n: [start + o, size] for n, (o, size) in placed.items()}
        header.update(size=start + end, payload_start=start)
        new_start = _pad(PREFIX.size + len(json.dumps(header, sort_keys=True).encode()))
        if new_start <= start:
            return header
        start = new_start


def open_entry(path: Path, key: str, *, verify: bool = True) -> Parsed | None:
    """Map ``path`` read-only when it is a complete entry for ``key``; None when it is absent,
    and None with a warning when it is truncated, corrupt or for another key (rebuild it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        header = _check(fd, path, key, verify=verify)
        if header is None:
            return None
        mapped = mmap.mmap(fd, header["size"], access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
    return _parsed(mapped, header, path)


def _check(fd: int, path: Path, key: str, *, verify: bool) -> dict | None:
    size = os.fstat(fd).st_size
    prefix = os.pread(fd, PREFIX.size, 0)
    problem = "not an annotation cache file"
    header = None
    if len(prefix) == PREFIX.size:
        magic, head_len, head_crc, _ = PREFIX.unpack(prefix)
        head = os.pread(fd, head_len, PREFIX.size) if magic == MAGIC else b""
        if magic == MAGIC and len(head) == head_len and zlib.crc32(head) == head_crc:
            header = json.loads(head)
            problem = ""
        elif magic == MAGIC:
            problem = "its header is damaged"
    if header is not None and header["size"] != size:
        problem = f"it has {size} bytes, its header says {header['size']} (truncated?)"
    elif header is not None and header["key"] != key:
        problem = "it was built for other inputs"
    elif header is not None and verify:
        actual = _crc_file(fd, header["payload_start"], size)
        if actual != header["payload_crc32"]:
            problem = f"crc32 {actual:08x} != {header['payload_crc32']:08x}"
    if problem:
        log.warning("parsed-annotations cache %s is unusable (%s); rebuilding it", path, problem)
        return None
    return header


def _parsed(mapped: mmap.mmap, header: dict, path: Path) -> Parsed:
    sections = header["sections"]

    def array(name: str, dtype: Any) -> np.ndarray:
        offset, length = sections[name]
        return np.frombuffer(mapped, dtype=dtype, count=length // np.dtype(dtype).itemsize,
                             offset=offset)  # fmt: skip

    offset, length = sections["attrs"]
    attrs = pickle.loads(mapped[offset : offset + length])
    lazy = {
        name.split(":", 1)[1]: LazyAttr(str(path), *sections[name])
        for name in sections
        if name.startswith("lazy:")
    }
    return Parsed(array("data_bytes", np.uint8), array("data_address", np.int64), attrs, lazy,
                  path)  # fmt: skip


def _reopen(path: str) -> Parsed:
    """Map an entry that a parent process already verified (unpickling in a worker)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        header = json.loads(os.pread(fd, PREFIX.unpack(os.pread(fd, PREFIX.size, 0))[1],
                                     PREFIX.size))  # fmt: skip
        mapped = mmap.mmap(fd, header["size"], access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
    return _parsed(mapped, header, Path(path))


def _pad(offset: int) -> int:
    return -(-offset // ALIGN) * ALIGN


def _crc_file(fd: int, start: int, stop: int) -> int:
    """crc32 of bytes ``start..stop`` of ``fd``, read in chunks (not mapped: checking must not
    count the whole file into this process's resident memory)."""
    crc, position = 0, start
    view = memoryview(bytearray(VERIFY_CHUNK))
    while position < stop:
        n = os.preadv(fd, [view[: min(VERIFY_CHUNK, stop - position)]], position)
        if n <= 0:
            break
        crc = zlib.crc32(view[:n], crc)
        position += n
    return crc
