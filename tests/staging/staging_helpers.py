"""Helpers for the staging tests (imported by the test modules, not a conftest)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from common import REPO_ROOT as REPO

BUCKET = "coco"
PREFIX = "coco2017"
GS_SOURCE = f"gs://{BUCKET}/{PREFIX}"
S3_SOURCE = f"s3://{BUCKET}/{PREFIX}"


def run_staging(
    *args: str, env: dict | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """``python -m staging ARGS`` in a fresh process (the same entrypoint as the hook)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "staging", "--quiet", *args],
        capture_output=True, text=True, env=full_env, cwd=REPO, timeout=timeout,
    )  # fmt: skip


def stage_args(source: str, root: Path, *extra: str) -> list[str]:
    return ["--source", source, "--cache", str(root / "cache"), "--dest", str(root / "dest"),
            *extra]  # fmt: skip


def snapshot(cache: Path) -> dict[str, str]:
    """relpath -> sha256 of every regular file in the cache except lock files."""
    if not cache.exists():
        return {}
    return {
        str(p.relative_to(cache)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(cache.rglob("*"))
        if p.is_file() and ".locks" not in p.relative_to(cache).parts
    }


def incomplete_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.incomplete")] if root.exists() else []


def write_coco(root: Path, *, n_images: int = 3, splits=("train", "val")) -> Path:
    """A small synthetic but valid COCO tree (for bad-input variants of a good source)."""
    for split in splits:
        images = [{"id": i + 1, "file_name": f"{i + 1:012d}.jpg", "width": 8, "height": 8}
                  for i in range(n_images)]  # fmt: skip
        anns = [{"id": 10 + i, "image_id": i + 1, "category_id": 1, "bbox": [0, 0, 4, 4],
                 "area": 16, "iscrowd": i % 2} for i in range(n_images)]  # fmt: skip
        doc = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}]}
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(doc))
        (root / f"{split}2017").mkdir(exist_ok=True)
        for img in images:
            (root / f"{split}2017" / img["file_name"]).write_bytes(os.urandom(2000))
    return root


def kill_mid_download(source: str, root: Path, *extra: str) -> None:
    """Start ``python -m staging`` on ``source``, SIGKILL it once a temp file holds 16 kB (the
    proxy slows the download), and check it left a temp file and no final file behind."""
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "staging", "--quiet", *stage_args(source, root, *extra)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        parts = incomplete_files(root / "cache")
        if parts and parts[0].stat().st_size >= 16_384:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert incomplete_files(root / "cache"), "the kill should leave a temp file behind"
    assert not (root / "dest").exists()
