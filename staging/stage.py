"""``stage_coco``: list the source, plan, fetch through the cache, subset, build the dest view.

The one public entrypoint of the package; ``invoke stage-coco``, ``python -m staging`` and the
startup hook all end up here.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from errors import ProjectError, StagingError
from staging import coco
from staging.archive import annotation_files
from staging.backend import write_index
from staging.cache import (
    Cache,
    Fetched,
    Pending,
    check_cache_dir,
    check_space,
    recorded_crc32c,
    write_atomic,
)
from staging.durable import Committer, NotCommitted
from staging.paths import derived_path, human_bytes, parse_source
from staging.plan import ARCHIVE_KIND, Transfer, describe, plan_annotations, plan_images
from staging.spec import DataSpec
from staging.stores.sources import Source, open_source
from staging.view import Entry, build_view, check_dest
from staging.writers import removed_on_error

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class StageResult:
    """What one ``stage_coco`` call did."""

    dest: Path
    files: int
    bytes: int
    downloads: int
    cache_hits: int
    seconds: float
    manifest: Path | None = None

    def summary(self) -> str:
        """``staged 3 files (1.2 MB) in 0.4 s: 0 downloaded, 3 cache hits``."""
        return (
            f"staged {self.files} files ({human_bytes(self.bytes)}) in {self.seconds:.2f} s: "
            f"{self.downloads} downloaded, {self.cache_hits} cache hits"
        )


def stage_coco(
    spec: DataSpec, *, progress: bool = False, dry_run: bool = False, out: Callable = print
) -> StageResult:
    """Stage the COCO annotations (and images if asked) of ``spec`` into its cache and dest."""
    t0 = time.monotonic()
    ref = parse_source(spec.source)
    check_dest(spec.dest, source=ref.path, cache=spec.cache)  # before anything is written
    source = open_source(ref, workers=spec.workers)
    cache = Cache(spec.cache)
    with ThreadPoolExecutor(1 + len(spec.splits)) as pool:  # one round trip, not three
        ann_listing = pool.submit(source.list_dir, "annotations")
        img_listings = {s: pool.submit(_image_listing, source, spec, s) for s in spec.splits}
        ann_plan = plan_annotations(ref, ann_listing.result(), spec.splits, cache_root=cache.root)
        listings = {s: f.result() for s, f in img_listings.items()}
    if dry_run:
        return _dry_run(spec, ann_plan, listings, source, out=out, t0=t0)
    with removed_on_error(cache.root):  # a cache this run creates is gone again on an error
        return _stage(spec, cache, source, ann_plan, listings, progress=progress, t0=t0)


def _stage(spec, cache, source, ann_plan, listings, *, progress, t0) -> StageResult:
    check_cache_dir(cache.root)
    check_space(cache.root, _missing_bytes(ann_plan))
    run = _Runner(cache, source, spec, progress=progress)
    # the annotation files are one group: all of them are cached, or none (a bad one, or one
    # naming an image the source lacks, leaves the cache as it was)
    ann_done = run.all(ann_plan, validate=_validator(spec, source, listings), group=True)
    ann_files = annotation_files(cache, ann_plan, ann_done, spec.splits)
    if spec.subset:
        ann_files = {
            s: (_subset_file(cache, spec, s, p, label), label)
            for s, (p, label) in ann_files.items()
        }
    img_plan = _plan_images(spec, source, listings, ann_files, cache_root=cache.root)
    check_space(cache.root, _missing_bytes(img_plan))
    img_done = run.all(img_plan)
    if spec.is_remote and not spec.with_images:
        write_index(spec.index(), listings)
    entries = _view_entries(spec, source, ann_files, img_plan, img_done)
    build_view(spec.dest, entries, cache=spec.cache)
    done = [*ann_done, *img_done]
    manifest = _write_manifest(cache, spec, [*ann_plan, *img_plan], done)
    downloads = sum(f.downloaded for f in done)
    return StageResult(spec.dest, len(done), sum(f.size for f in done), downloads,
                       len(done) - downloads, time.monotonic() - t0, manifest)  # fmt: skip


def _plan_images(
    spec: DataSpec, source: Source, listings: dict, ann_files: dict, *, cache_root: Path
) -> list[Transfer]:
    """Image transfers: the images the split's JSON names (also for a gs:// source read through
    the cache). An image the JSON names that the source lacks is a StagingError now, not at the
    trial's first validation; a warm cache skips the check (a marker keyed by JSON + listing)."""
    plan: list[Transfer] = []
    if not spec.with_images and not spec.is_gs:
        return plan  # the view links the source's folders; the trial checks them (--data)
    for split in spec.splits:
        ann, label = ann_files[split]
        names = sorted(o.relpath for o in listings[split])
        checked = derived_path(cache_root, f"images|{ann}|{names}", "images-checked")
        if not spec.with_images and checked.exists():
            continue
        wanted = coco.image_files(coco.load_json(ann, label=label))
        plan += plan_images(
            source.ref,
            listings[split],
            split,
            cache_root=cache_root,
            wanted=wanted,
            ann_label=label,
        )  # raises for the first image the JSON names that the listing lacks
        if not spec.with_images:
            write_atomic(checked, b"", mode=0o444)
    return plan if spec.with_images else []


def _validator(spec: DataSpec, source: Source, listings: dict) -> Callable:
    """The check of an annotation file's temp copy: valid COCO, and (where staging reads the
    images through the listing) every image it names, or its subset names, in the listing."""

    def for_transfer(t: Transfer) -> Callable[[Path], None] | None:
        if t.kind == ARCHIVE_KIND:
            return None

        def check(path: Path) -> None:
            doc = coco.check_coco_file(path, label=t.info.url)
            if spec.with_images or spec.is_gs:  # what _plan_images checks, before caching
                chosen = coco.subset_doc(doc, spec.subset, seed=spec.seed) if spec.subset else doc
                plan_images(source.ref, listings[t.split], t.split, cache_root=Path(spec.cache),
                            wanted=coco.image_files(chosen), ann_label=t.info.url)  # fmt: skip

        return check

    return for_transfer


def _image_listing(source: Source, spec: DataSpec, split: str) -> list:
    """List the split's images when we stage them or pin them for the read-through backend
    (gs://, s3://); otherwise only check the folder exists."""
    folder = coco.image_dir(split)
    if spec.with_images or spec.is_remote:
        listing = source.list_dir(folder)
        if listing:
            return listing
    elif source.exists_dir(folder):
        return []
    raise StagingError(
        f"missing image folder {source.ref.object_url(folder)}/; data.source must hold "
        f"{folder}/ next to annotations/"
    )


def _missing_bytes(plan: Sequence[Transfer]) -> int:
    return sum(t.info.size for t in plan if not t.final.exists())


class _Runner:
    """Runs transfers on a thread pool; results align 1:1 with the input; failures raised last."""

    def __init__(self, cache: Cache, source: Source, spec: DataSpec, *, progress: bool) -> None:
        self.cache, self.source, self.spec, self.progress = cache, source, spec, progress

    def all(self, transfers: Sequence[Transfer], *, validate=None, group=False) -> list[Fetched]:
        results = run_transfers(
            transfers,
            cache=self.cache,
            source=self.source,
            max_workers=self.spec.workers,
            verify=self.spec.verify,
            validate=validate,
            progress=self.progress,
            group=group,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        errors = [e for e in errors if not isinstance(e, NotCommitted)] or errors
        if errors:
            first = errors[0]
            more = f" (+{len(errors) - 1} more objects failed)" if len(errors) > 1 else ""
            if isinstance(first, ProjectError):
                raise type(first)(f"{first}{more}") from first
            raise StagingError(f"staging failed: {type(first).__name__}: {first}{more}") from first
        return results  # type: ignore[return-value]


def run_transfers(
    transfers: Sequence[Transfer],
    *,
    cache: Cache,
    source: Source,
    max_workers: int,
    verify: bool = False,
    validate: Callable[[Transfer], Callable[[Path], None] | None] | None = None,
    progress: bool = False,
    group: bool = False,
) -> list[Fetched | BaseException]:
    """Fetch every transfer (hits by a metadata check only); one result or exception per input.

    ``group``: all-or-nothing; when one fetch fails, none of this call's downloads is cached
    (each is NotCommitted)."""
    results: list[Fetched | BaseException | None] = [None] * len(transfers)
    todo = []
    for i, t in enumerate(transfers):
        if not verify and t.final.exists():
            results[i] = Fetched(t.final, False, t.info.size, t.info.crc32c or "")
        else:
            todo.append(i)
    total = sum(transfers[i].info.size for i in todo)
    workers = max(1, min(max_workers, len(todo)))
    if group:  # each object's lock is held until the whole group commits: two stagers taking
        # the locks in different orders would each wait for the other, so take them one at a
        # time, in the order every process shares
        todo.sort(key=lambda i: str(transfers[i].final))
        workers = 1
    handed: dict[int, Future] = {}  # downloads whose flush + rename the committer finishes
    with (
        _progress_bar(total, enabled=progress) as on_bytes,
        Committer(hold=group) as committer,
        ThreadPoolExecutor(workers) as pool,
    ):
        futures = {
            pool.submit(cache.ensure, transfers[i].info, source, verify=verify,
                        validate=validate(transfers[i]) if validate else None,
                        on_bytes=on_bytes, final=None if verify else transfers[i].final,
                        committer=committer): i
            for i in todo
        }  # fmt: skip
        for fut in as_completed(futures):
            i, err = futures[fut], fut.exception()
            result = err if err is not None else fut.result()
            if isinstance(result, Pending):
                handed[i] = result.future
            else:
                results[i] = result
        if any(isinstance(r, BaseException) for r in results):
            committer.discard()  # a group's commit waits for the end of the block: none of it
    for i, fut in handed.items():  # the committer has finished them all on leaving the block
        err = fut.exception()
        results[i] = err if err is not None else fut.result()
    return results  # type: ignore[return-value]


@contextlib.contextmanager
def _progress_bar(total: int, *, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A thread-safe byte counter feeding tqdm (shown on a terminal when there is work)."""
    from tqdm import tqdm

    lock = threading.Lock()
    with tqdm(total=total, unit="B", unit_scale=True, desc="staging", mininterval=0.5,
              disable=None if enabled and total else True) as bar:  # fmt: skip

        def on_bytes(n: int) -> None:
            with lock:
                bar.update(n)

        yield on_bytes


def _subset_file(cache: Cache, spec: DataSpec, split: str, ann: Path, label: str) -> Path:
    """The deterministic subset JSON for ``ann`` (derived, keyed by its inputs; written once)."""
    assert spec.subset is not None
    key = f"subset|{ann}|{spec.subset}|{spec.seed}"
    final = derived_path(cache.root, key, f"instances_{split}2017.json")
    if not final.exists():
        doc = coco.subset_doc(coco.load_json(ann, label=label), spec.subset, seed=spec.seed)
        coco.validate_coco(doc, label=f"subset of {label}")
        write_atomic(final, json.dumps(doc).encode(), mode=0o444)
    return final


def _view_entries(
    spec: DataSpec,
    source: Source,
    ann_files: dict[str, tuple[Path, str]],
    img_plan: Sequence[Transfer],
    img_done: Sequence[Fetched],
) -> list[Entry]:
    """What ``spec.dest`` shows: annotations and images (or the source's image folders)."""
    entries = [Entry(coco.ann_relpath(s), p) for s, (p, _) in ann_files.items()]
    if spec.with_images:
        entries += [Entry(t.info.relpath, f.path) for t, f in zip(img_plan, img_done, strict=True)]
    elif not source.ref.remote:
        assert source.ref.path is not None
        for split in spec.splits:
            folder = coco.image_dir(split)
            entries.append(Entry(folder, source.ref.path / folder, is_dir=True))
    return entries


def _write_manifest(
    cache: Cache, spec: DataSpec, plan: Sequence[Transfer], done: Sequence[Fetched]
) -> Path:
    """``<cache>/manifests/<key>.json``: every staged object with size and crc32c.

    Rewritten only when something was downloaded or it is missing, so warm runs stay cheap.
    """
    path = spec.manifest()
    if path.exists() and not any(f.downloaded for f in done):
        return path
    objects = [
        {
            "url": t.info.url,
            "ident": t.info.ident,
            "kind": t.kind,
            "size": f.size,
            "crc32c": f.crc32c or recorded_crc32c(f.path),
            "path": str(f.path.relative_to(cache.root)),
        }
        for t, f in zip(plan, done, strict=True)
    ]
    keep = ("source", "splits", "with_images", "subset", "seed")
    what = {k: v for k, v in spec.to_dict().items() if k in keep}
    doc = {"version": MANIFEST_VERSION, "spec": what, "objects": objects}
    write_atomic(path, json.dumps(doc, indent=1, sort_keys=True).encode())
    return path


def _dry_run(spec: DataSpec, ann_plan, listings, source: Source, *, out, t0) -> StageResult:
    cache_root = Path(spec.cache)
    plan = list(ann_plan)
    if spec.with_images and not spec.subset:
        for split in spec.splits:
            plan += plan_images(source.ref, listings[split], split, cache_root=cache_root)
    for line in describe(plan, [t.final.exists() for t in plan]):
        out(line)
    if spec.with_images and spec.subset:
        out(f"images: {spec.subset} per split, chosen (seed {spec.seed}) once annotations are in")
    out(f"dest view: {spec.dest} (nothing was written)")
    return StageResult(
        spec.dest, len(plan), sum(t.info.size for t in plan), 0, 0, time.monotonic() - t0
    )
