"""What the staging benchmarks share (bench/staging.py, staging_net.py, staging_s3.py import it; it
imports none of them): a timed stage, a generated image tree, CPU accounting. Medians and verdicts
are bench/harness.py's."""

from __future__ import annotations

import json
import os
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path


def stage_seconds(source: str, cache: Path, dest: Path, **kw) -> float:
    from staging import DataSpec, stage_coco

    spec = DataSpec.from_dict({"source": source, "cache": str(cache), "dest": str(dest), **kw})
    t0 = time.perf_counter()
    stage_coco(spec)
    return time.perf_counter() - t0


def write_image_tree(root: Path, *, files: int, size: int, splits=("train",)) -> int:
    """A COCO tree with ``files`` random 'images' per split and a matching annotation file."""
    total = 0
    for split in splits:
        folder = root / f"{split}2017"
        folder.mkdir(parents=True, exist_ok=True)
        images = []
        for i in range(files):
            (folder / f"{i:012d}.jpg").write_bytes(os.urandom(size))
            images.append({"id": i, "file_name": f"{i:012d}.jpg", "width": 1, "height": 1})
        doc = {"images": images, "annotations": [], "categories": [{"id": 1, "name": "a"}]}
        (root / "annotations").mkdir(exist_ok=True)
        ann = root / "annotations" / f"instances_{split}2017.json"
        ann.write_text(json.dumps(doc))
        total += files * size + ann.stat().st_size
    return total


def busy(
    server_cpu: Callable[[], float], fn: Callable[[int], float], runs: int
) -> tuple[float, float, float]:
    """Medians over ``runs`` of (wall seconds, server CPU seconds, our CPU seconds)."""
    walls, server, client = [], [], []
    for i in range(runs):
        before, mine = server_cpu(), own_cpu()
        walls.append(fn(i))
        server.append(server_cpu() - before)
        client.append(own_cpu() - mine)
    return statistics.median(walls), statistics.median(server), statistics.median(client)


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
