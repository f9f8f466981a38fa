"""`invoke bench images`: a full build of the cpu variant against an unchanged rebuild.

Side by side in one run, both through the real CLI (`python -m invoke build-image --variant cpu
--builder buildah --wheelhouse auto`): (1) one forced build, then (2) ``runs`` unchanged rebuilds,
which the content-hash tag turns into a skip (goal: < 2 s each, process start included).
Prints both wall times, their ratio and the image size.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from bench.harness import goal, report
from common import REPO_ROOT
from errors import BuildError
from images import buildah
from images.build import BuildRequest, build_images

DEFAULT_RUNS = 5
GOAL_S = 2.0
CLI = ("build-image", "--variant", "cpu", "--builder", "buildah", "--wheelhouse", "auto")


def main(runs: int = 0) -> None:
    """Print full-build vs no-change-rebuild wall times, their ratio and the image size."""
    runs = runs or DEFAULT_RUNS
    full, _ = _timed(*CLI, "--force")
    skips = []
    for _ in range(runs):
        seconds, out = _timed(*CLI)
        if "skipped" not in out:
            raise BuildError(f"an unchanged rebuild was not skipped: {out.strip()}")
        skips.append(seconds)
    (plan,) = build_images(
        BuildRequest(variants=("cpu",), wheelhouse="auto", dry_run=True), echo=lambda _line: None
    )
    ref = plan.content_ref
    median = statistics.median(skips)  # the skips are the measured loop; the full build is one
    size = buildah.run_buildah("images", "--format", "{{.Size}}", ref, capture=True)
    print(f"image            {ref}")
    print(f"image size       {size.splitlines()[0]} (buildah images, uncompressed)")
    print(
        f"full build       {full:8.1f} s  (--force: buildah, {buildah.storage_driver()} storage, wheelhouse auto)"
    )
    print(
        f"no-change build  {median:8.2f} s  (median of {runs}, CLI start included; "
        "skipped by content hash)"
    )
    print(
        f"ratio            {full / median:8.0f}x faster; {goal(f'< {GOAL_S:.0f} s', median < GOAL_S)}"
    )
    report("images", "rebuild", image=ref, full_build_s=full, no_change_s=median,
           ratio=full / median, met=median < GOAL_S)  # fmt: skip


def _timed(*args: str) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise BuildError(f"invoke {' '.join(args)} failed: {proc.stderr.strip()[-300:]}")
    return seconds, proc.stdout
