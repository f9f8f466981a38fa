"""Shared fixtures: the real COCO sample beside the checkout, and the built-in shapes set."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
COCO_TINY = Path(os.environ.get("COCO_TINY", REPO_ROOT.parent / "shared" / "coco-tiny"))


@pytest.fixture(scope="session")
def coco_tiny() -> Path:
    """../shared/coco-tiny: real COCO 2017 images and annotations (crowd RLE, category gaps)."""
    if not (COCO_TINY / "annotations" / "instances_train2017.json").exists():
        pytest.fail(f"real COCO sample missing at {COCO_TINY}; set COCO_TINY to its path")
    return COCO_TINY


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory) -> Path:
    """The built-in shapes set, generated once per session into a temp cache."""
    from trial.shapes import make_shapes_coco

    return make_shapes_coco(tmp_path_factory.mktemp("cache") / "shapes")
