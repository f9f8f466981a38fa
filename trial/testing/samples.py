"""Which COCO sample the tests, the CI smoke and the benchmarks run on: the real one when it is
there (``$COCO_TINY``, else ``../shared/coco-tiny`` beside the checkout), else the generated shapes
set. A user's clone has no ``../shared``; everything must pass on the shapes set too."""

from __future__ import annotations

import os
from pathlib import Path

from common import REPO_ROOT

SAMPLE_ENV = "COCO_TINY"  # a real COCO sample's path; default ../shared/coco-tiny


def real_coco_sample() -> Path | None:
    """The real COCO sample (``$COCO_TINY``, else ``../shared/coco-tiny``) when it exists, else None.

    A user's clone has no ``../shared``; tests, the smoke and the benchmarks then use the shapes set.
    """
    root = Path(os.environ.get(SAMPLE_ENV) or REPO_ROOT.parent / "shared" / "coco-tiny")
    return root if (root / "annotations" / "instances_train2017.json").is_file() else None


def describe_sample(root: Path) -> str:
    """One line for logs: which COCO sample a run used."""
    if root == real_coco_sample():
        return f"real COCO sample {root}"
    return f"generated shapes set {root} (no real sample: set ${SAMPLE_ENV} or put ../shared/coco-tiny)"
