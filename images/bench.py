"""`invoke bench images`: a full build of the cpu variant against an unchanged rebuild.

Side by side in one run: (1) a forced buildah build of `cpu` (wheelhouse auto), then (2) ``runs``
unchanged rebuilds, which the content-hash tag turns into a skip (goal: < 2 s each, the whole
`build_images` call: matrix, rules, digests, existence probe). Prints the ratio and the image size.
"""

from __future__ import annotations

import statistics
import time

from images import buildah
from images.build import BuildRequest, build_images

DEFAULT_RUNS = 5
GOAL_S = 2.0


def main(runs: int = 0) -> None:
    """Print full-build vs no-change-rebuild wall times, their ratio and the image size."""
    runs = runs or DEFAULT_RUNS
    request = BuildRequest(variants=("cpu",), builder="buildah", wheelhouse="auto")
    start = time.perf_counter()
    (plan,) = build_images(BuildRequest(**{**request.__dict__, "force": True}), echo=_quiet)
    full = time.perf_counter() - start
    skips = []
    for _ in range(runs):
        start = time.perf_counter()
        (again,) = build_images(request, echo=_quiet)
        skips.append(time.perf_counter() - start)
        assert again.skip, "an unchanged rebuild must be skipped"
    median = statistics.median(skips)
    size = buildah.run_buildah("images", "--format", "{{.Size}}", plan.content_ref, capture=True)
    print(f"image            {plan.content_ref}")
    print(f"image size       {size.strip()} (buildah images, uncompressed)")
    print(f"full build       {full:8.1f} s  (forced, buildah, vfs, wheelhouse auto)")
    print(f"no-change build  {median:8.3f} s  (median of {runs}; skipped by content hash)")
    print(
        f"ratio            {full / median:8.0f}x faster; goal < {GOAL_S} s: "
        f"{'met' if median < GOAL_S else 'MISSED'}"
    )


def _quiet(_line: str) -> None:
    pass
