"""Pretrained checkpoints (``init_cfg=Pretrained``, ``load_from``) staged into the node cache.

An ASHA search of 16 trials x 8 ranks would otherwise download the same ResNet-50 128 times, and an
air-gapped cluster cannot download it at all. Every checkpoint a config names is fetched once per
node through the same cache as COCO (staging/cache.py: lock, unique temp, size/crc32c check,
rename), from a mirror (``data.weights_mirror``: ``gs://`` or ``s3://bucket/weights``, or a path holding the
files under their URL's file name) or else from the URL itself. The trial then loads the cached
file by path (``init_cfg.checkpoint`` rewritten), so mmengine never opens a URL; this also covers
``torchvision://``, whose mmengine loader imports torchvision (absent from CPU images).

A pin file per checkpoint (``<cache>/manifests/weights-<key>.json``) records which cached file the
last staging chose, so trial ranks find it without a network round trip.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from errors import ConfigError, StagingError
from staging.cache import Cache, Fetched, write_atomic
from staging.paths import MANIFESTS_DIR, SourceRef, parse_source, short_hash
from staging.stores.sources import (
    CONNECT_TIMEOUT_S,
    READ_TIMEOUT_S,
    ObjectInfo,
    Source,
    open_source,
    short_reason,
)

log = logging.getLogger(__name__)

PIN_VERSION = 1
TORCHVISION = ("torchvision://", "modelzoo://")
OPENMMLAB = ("open-mmlab://", "openmmlab://")
HTTP = ("http://", "https://")
STORES = ("gs://", "s3://")
MIRROR_HINT = (
    "on an offline cluster put the file in a mirror and set data.weights_mirror to "
    "gs://bucket/weights, s3://bucket/weights or a directory holding it"
)


@dataclass(frozen=True)
class WeightsResult:
    """Where each checkpoint reference is cached, and what this call downloaded."""

    paths: Mapping[str, Path]
    downloads: int
    cache_hits: int

    def summary(self) -> str:
        """``weights: 1 checkpoint(s), 1 downloaded, 0 cache hits``."""
        return (
            f"weights: {len(self.paths)} checkpoint(s), {self.downloads} downloaded, "
            f"{self.cache_hits} cache hits"
        )


def checkpoint_refs(cfg: Mapping[str, Any]) -> list[str]:
    """Every checkpoint a config loads: ``init_cfg=Pretrained`` in the model and ``load_from``."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for init in _as_list(node.get("init_cfg")):
                pretrained = isinstance(init, Mapping) and init.get("type") == "Pretrained"
                if pretrained and isinstance(init.get("checkpoint"), str):
                    found.append(init["checkpoint"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list | tuple):
            for value in node:
                walk(value)

    walk(cfg.get("model"))
    if isinstance(cfg.get("load_from"), str) and not cfg.get("resume"):
        found.append(cfg["load_from"])
    return list(dict.fromkeys(found))


def resolve_url(ref: str) -> str | None:
    """The download URL behind a checkpoint reference (mmengine's own URL tables for
    ``torchvision://`` and ``open-mmlab://``); None for a local path (nothing to stage)."""
    if ref.startswith(HTTP) or ref.startswith(STORES):
        return ref
    if ref.startswith(TORCHVISION):
        name = ref.split("://", 1)[1]
        return _table_url("torchvision_0.12.json", name, ref)
    if ref.startswith(OPENMMLAB):
        name = ref.split("://", 1)[1]
        name = _hub_table("deprecated.json").get(name, name)
        return _table_url("openmmlab.json", name, ref)
    if "://" in ref:
        raise ConfigError(
            f"checkpoint {ref!r}: cannot stage this scheme; use an https://, gs://, s3://, "
            "torchvision:// or open-mmlab:// checkpoint, or a local path"
        )
    return None


def stage_weights(
    cache_dir: Path, refs: Iterable[str], *, mirror: str | None = None, use_pins: bool = False
) -> WeightsResult:
    """Bring each checkpoint of ``refs`` into the cache once per node; return their paths.

    ``use_pins``: trust the pin a previous staging wrote (no source call at all when the pinned
    file is there): what trial ranks do after the startup hook staged."""
    cache = Cache(Path(cache_dir))
    paths: dict[str, Path] = {}
    downloads = hits = 0
    for ref in refs:
        url = resolve_url(ref)
        if url is None:
            continue
        pin = pin_path(cache.root, url, mirror)
        pinned = _read_pin(pin, cache.root) if use_pins else None
        if pinned is not None:
            paths[ref], hits = pinned, hits + 1
            continue
        fetched = _fetch(cache, ref, url, mirror)
        assert isinstance(fetched, Fetched)  # no committer: a download is finished here
        downloads += fetched.downloaded
        hits += not fetched.downloaded
        paths[ref] = fetched.path
        _write_pin(pin, cache.root, ref=ref, url=url, mirror=mirror, path=fetched.path)
        log.info("%s %s -> %s", "fetched" if fetched.downloaded else "cached", ref, fetched.path)
    return WeightsResult(paths, downloads, hits)


def rewrite_checkpoints(cfg: Any, paths: Mapping[str, Path]) -> int:
    """Point every staged reference in ``cfg`` (in place) at its cached file; return how many."""
    count = 0

    def walk(node: Any) -> None:
        nonlocal count
        if isinstance(node, dict):
            for init in _as_list(node.get("init_cfg")):
                if isinstance(init, dict) and init.get("checkpoint") in paths:
                    init["checkpoint"] = str(paths[init["checkpoint"]])
                    count += 1
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(cfg["model"])
    if cfg.get("load_from") in paths and not cfg.get("resume"):
        cfg["load_from"] = str(paths[cfg["load_from"]])
        count += 1
    return count


def pin_path(cache_root: Path, url: str, mirror: str | None) -> Path:
    """``<cache>/manifests/weights-<key>.json``: the cached file staging chose for ``url``."""
    return cache_root / MANIFESTS_DIR / f"weights-{short_hash(url, mirror or '')}.json"


def _fetch(cache: Cache, ref: str, url: str, mirror: str | None):
    name = url.rstrip("/").rpartition("/")[2]
    if mirror:
        ref_m = parse_source(mirror, field="data.weights_mirror")
        if not ref_m.remote and not (ref_m.path and ref_m.path.is_dir()):
            raise StagingError(
                f"data.weights_mirror {mirror} is not a directory; point it at a folder, "
                "gs://bucket/prefix or s3://bucket/prefix holding the checkpoint files"
            )
        source = open_source(ref_m)
        info = _stat(source, name, what=f"{ref}, from {url}")
    elif url.startswith(STORES):
        folder = url.rpartition("/")[0]
        source = open_source(parse_source(folder, field=f"checkpoint {ref}"))
        info = _stat(source, name, what=ref)
    else:
        source = HttpSource(ref)
        info = source.stat(url)
    return cache.ensure(info, source)


def _stat(source: Source, name: str, *, what: str) -> ObjectInfo:
    if source.ref.remote:
        try:
            return source.stat(name)
        except StagingError as err:
            if "missing object" not in str(err):
                raise
    else:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            return source.stat(name)
    raise StagingError(
        f"missing object {source.ref.object_url(name)} (checkpoint {what}); upload that file "
        "to the mirror, or fix data.weights_mirror"
    )


class HttpSource:
    """A checkpoint at an http(s) URL (model zoos): HEAD for size and identity, ranged GETs."""

    def __init__(self, ref: str) -> None:
        self.ref = SourceRef("http", url="")  # the URL is in each ObjectInfo
        self.label = ref

    def stat(self, url: str) -> ObjectInfo:
        """Size and identity (ETag or Last-Modified) of ``url``; one-line error when offline."""
        import requests

        try:
            resp = requests.head(url, allow_redirects=True, timeout=CONNECT_TIMEOUT_S)
            resp.raise_for_status()
        except requests.RequestException as err:
            raise StagingError(
                f"cannot reach {url} for checkpoint {self.label} ({short_reason(err)}); {MIRROR_HINT}"
            ) from err
        size = int(resp.headers.get("Content-Length") or 0)
        if size <= 0:  # the size check needs it; model zoos send it
            raise StagingError(
                f"{url} (checkpoint {self.label}) does not report its size; {MIRROR_HINT}"
            )
        tag = resp.headers.get("ETag") or resp.headers.get("Last-Modified") or ""
        return ObjectInfo(
            relpath=url.rpartition("/")[2], url=url, size=size, ident=f"size={size},tag={tag}"
        )

    def list_dir(self, reldir: str) -> list[ObjectInfo]:
        raise NotImplementedError("an http source has no listing")

    def exists_dir(self, reldir: str) -> bool:
        return False

    def read_into(self, info: ObjectInfo, writer, *, start: int) -> None:
        """GET the URL from byte ``start`` (one attempt; staging/stores/fetch.py retries)."""
        import requests

        headers = {"Range": f"bytes={start}-"} if start else {}
        with requests.get(
            info.url, headers=headers, stream=True, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)
        ) as resp:
            resp.raise_for_status()
            if start and resp.status_code != 206:
                raise StagingError(f"{info.url} ignored a ranged request; rerun staging")
            for chunk in resp.iter_content(chunk_size=1 << 20):
                writer.write(chunk)


def _read_pin(pin: Path, cache_root: Path) -> Path | None:
    try:
        doc = json.loads(pin.read_text())
        path = cache_root / doc["path"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return path if doc.get("version") == PIN_VERSION and path.is_file() else None


def _write_pin(pin: Path, cache_root: Path, *, ref: str, url: str, mirror, path: Path) -> None:
    doc = {"version": PIN_VERSION, "ref": ref, "url": url, "mirror": mirror,
           "path": str(path.relative_to(cache_root))}  # fmt: skip
    data = json.dumps(doc, sort_keys=True).encode()
    with contextlib.suppress(OSError):
        if pin.read_bytes() == data:
            return
    write_atomic(pin, data)


def _hub_table(name: str) -> dict[str, str]:
    """One of mmengine's URL tables (``mmengine/hub/*.json``), read without importing mmengine."""
    spec = importlib.util.find_spec("mmengine")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("mmengine is not installed; it is needed to resolve checkpoint names")
    path = Path(next(iter(spec.submodule_search_locations))) / "hub" / name
    return json.loads(path.read_text())


def _table_url(table: str, name: str, ref: str) -> str:
    url = _hub_table(table).get(name)
    if not isinstance(url, str) or not url.startswith(HTTP):
        raise ConfigError(
            f"checkpoint {ref!r} is not in mmengine's {table}; write its https:// URL instead"
        )
    return url


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]
