"""``invoke bench staging``: side-by-side timings in one run, printed as ratios against goals.

1. warm vs cold stage of a generated ~500 MB annotation set (goal: warm <= 0.1 s, >= 50x);
2. cold disk stage (--with-images) vs ``cp -r`` + ``sync -f`` of the same tree (goal <= 1.5x);
3. client CPU per object, staging vs a plain serial google-cloud-storage loop, from the emulator
   on loopback (goal <= 1.5x);
4. at 20 ms per request (latency proxy): staging vs the serial loop (>= 8x) and vs
   transfer_manager.download_many (>= 1.0x); the read-through backend warm (<= 1.1x mmengine's
   local backend) and cold (>= 200 images/s with 8 loader processes) -- staging/bench_net.py.

Scratch data lives under /tmp and is deleted afterwards.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from staging.bench_net import bench_latency, bench_read_through, serial_download
from staging.paths import human_bytes

DEFAULT_RUNS = 3
ANN_TARGET_BYTES = 500_000_000
GCS_OBJECTS = 300
GCS_OBJECT_BYTES = 100_000
DISK_FILES = 1000
DISK_FILE_BYTES = 200_000


def main(runs: int = 0) -> None:
    """Run the three comparisons and print one line each (plus the commands to reproduce)."""
    runs = runs or DEFAULT_RUNS
    # google-api-core warns on import that it will drop this Python one day: not a result
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.api_core")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"staging benchmark: median of {runs} runs per side; {os.cpu_count()} CPUs, "
        f"load average {load} at start"
    )
    with tempfile.TemporaryDirectory(prefix="staging-bench-", dir="/tmp") as tmp:
        root = Path(tmp)
        _bench_warm(root / "warm", runs)
        _bench_disk(root / "disk", runs)
        _bench_gcs(root / "gcs", runs)
        _isolated(bench_latency, root / "latency", runs)
        _isolated(bench_read_through, root / "read", runs)


def _isolated(fn: Callable, root: Path, runs: int) -> None:
    fn(root, runs, median=_median, verdict=_verdict)
    shutil.rmtree(root, ignore_errors=True)


def _median(fn: Callable[[int], float], runs: int) -> float:
    return statistics.median(fn(i) for i in range(runs))


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def stage_seconds(source: str, cache: Path, dest: Path, **kw) -> float:
    from staging import DataSpec, stage_coco

    spec = DataSpec.from_dict({"source": source, "cache": str(cache), "dest": str(dest), **kw})
    t0 = time.perf_counter()
    stage_coco(spec)
    return time.perf_counter() - t0


def write_big_annotations(root: Path, target: int = ANN_TARGET_BYTES) -> int:
    """A valid COCO tree whose two annotation files total about ``target`` bytes."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    total = 0
    for split, share in (("train", 0.9), ("val", 0.1)):
        path = root / "annotations" / f"instances_{split}2017.json"
        total += _write_ann(path, int(target * share))
        (root / f"{split}2017").mkdir(exist_ok=True)
    return total


def _write_ann(path: Path, target: int) -> int:
    poly = json.dumps([[(i * 37) % 250 for i in range(200)]])  # small ints: cheap to parse
    n_images = max(1, target // 100_000)
    with open(path, "w") as f:
        f.write('{"info": {"description": "synthetic"}, "categories": [{"id": 1, "name": "a"}], ')
        f.write('"images": [')
        f.write(", ".join(f'{{"id": {i}, "file_name": "{i:012d}.jpg", "width": 640, '
                          f'"height": 480}}' for i in range(n_images)))  # fmt: skip
        f.write('], "annotations": [')
        i = 0
        while f.tell() < target:
            sep = ", " if i else ""
            f.write(
                f'{sep}{{"id": {i}, "image_id": {i % n_images}, "category_id": 1, '
                f'"iscrowd": 0, "area": 1.0, "bbox": [0, 0, 1, 1], "segmentation": {poly}}}'
            )
            i += 1
        f.write("]}")
    return path.stat().st_size


def _bench_warm(root: Path, runs: int) -> None:
    size = write_big_annotations(root / "src")
    src = str(root / "src")

    def cold(i: int) -> float:
        return stage_seconds(src, root / f"cache{i}", root / f"dest{i}")

    cold_s = _median(cold, runs)
    warm_s = _median(lambda i: stage_seconds(src, root / "cache0", root / "dest0"), max(runs, 5))
    ratio = cold_s / warm_s
    print(f"warm stage of {human_bytes(size)} annotations: cold {cold_s:.2f} s, warm "
          f"{warm_s * 1000:.1f} ms -> {ratio:.0f}x faster (goal: warm <= 0.1 s and >= 50x): "
          f"{_verdict(warm_s <= 0.1 and ratio >= 50)}")  # fmt: skip
    cli = _cli_seconds(src, root / "cache0", root / "dest0")
    print(
        f"  (the same warm stage as a fresh `python -m staging` process: {cli:.2f} s, "
        "mostly interpreter start-up and imports)"
    )
    shutil.rmtree(root)


def _cli_seconds(source: str, cache: Path, dest: Path) -> float:
    cmd = [sys.executable, "-m", "staging", "--quiet", "--source", source, "--cache", str(cache),
           "--dest", str(dest)]  # fmt: skip
    repo = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": repo}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=repo)
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


def _bench_disk(root: Path, runs: int) -> None:
    total = write_image_tree(root / "src", files=DISK_FILES, size=DISK_FILE_BYTES)
    src = str(root / "src")
    subprocess.run(["sync"], check=True)

    def cp(i: int, *, durable: bool = False) -> float:
        out = root / f"cp{i}{'s' if durable else ''}"
        t0 = time.perf_counter()
        subprocess.run(["cp", "-r", src, str(out)], check=True)
        if durable:
            subprocess.run(["sync", "-f", str(out)], check=True)
        return time.perf_counter() - t0

    def stage(i: int) -> float:
        return stage_seconds(src, root / f"cache{i}", root / f"dest{i}", with_images=True,
                      splits=["train"])  # fmt: skip

    cp_s, stage_s = _median(cp, runs), _median(stage, runs)
    sync_s = _median(lambda i: cp(i, durable=True), runs)
    ratio = stage_s / sync_s
    print(f"cold disk stage of {DISK_FILES} files ({human_bytes(total)}; crc32c + durable "
          f"write each): staging {stage_s:.2f} s vs cp -r + sync -f {sync_s:.2f} s -> "
          f"{ratio:.2f}x (goal <= 1.5x): {_verdict(ratio <= 1.5)}")  # fmt: skip
    print(f"  (page-cache baseline, cp -r alone: {cp_s:.2f} s -> staging is "
          f"{stage_s / cp_s:.2f}x of it)")  # fmt: skip
    shutil.rmtree(root)


def _bench_gcs(root: Path, runs: int) -> None:
    from staging.bench_net import BUCKET_URL
    from staging.emulator import running_emulator, upload_dir

    total = write_image_tree(root / "src", files=GCS_OBJECTS, size=GCS_OBJECT_BYTES)
    with running_emulator() as url:
        upload_dir(root / "src", BUCKET_URL, workers=4)
        serial = _busy(url, lambda i: serial_download(root / f"serial{i}"), runs)
        stage = _busy(url, lambda i: stage_seconds(BUCKET_URL, root / f"cache{i}",
                                                   root / f"dest{i}", with_images=True,
                                                   splits=["train"]), runs)  # fmt: skip
    n = GCS_OBJECTS + 1
    ratio = stage[2] / serial[2]
    print(f"client CPU per object, cold GCS stage of {n} objects ({human_bytes(total)}) from the "
          f"emulator on loopback: staging {stage[2] / n * 1000:.2f} ms vs serial "
          f"google-cloud-storage loop {serial[2] / n * 1000:.2f} ms -> {ratio:.2f}x "
          f"(goal <= 1.5x): {_verdict(ratio <= 1.5)}")  # fmt: skip
    print(f"  (wall: staging {stage[0]:.2f} s vs serial loop {serial[0]:.2f} s; emulator CPU "
          f"{stage[1]:.2f} vs {serial[1]:.2f} s; no network wait on loopback, so {os.cpu_count()} "
          "shared CPUs bound both)")  # fmt: skip
    shutil.rmtree(root)


def _busy(url: str, fn: Callable[[int], float], runs: int) -> tuple[float, float, float]:
    """Medians over ``runs`` of (wall seconds, emulator CPU seconds, our CPU seconds)."""
    from staging.emulator import emulator_cpu_seconds

    walls, server, client = [], [], []
    for i in range(runs):
        before, mine = emulator_cpu_seconds(url), _own_cpu()
        walls.append(fn(i))
        server.append(emulator_cpu_seconds(url) - before)
        client.append(_own_cpu() - mine)
    return statistics.median(walls), statistics.median(server), statistics.median(client)


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
