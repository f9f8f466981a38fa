"""Shared fixtures: the COCO sample the tests run on, and the built-in shapes set.

The sample is the real one (``$COCO_TINY`` or ``../shared/coco-tiny``) when it exists — CI has it, so
real COCO quirks stay covered — and otherwise the shapes set the project generates, which has the
properties the tests rely on (polygons, a crowd RLE per split, COCO's category ids with their gaps,
images on disk). A user's fresh clone has no ``../shared``; every test must pass there too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from trial.testing.samples import describe_sample, real_coco_sample

REAL_SAMPLE = real_coco_sample()


def pytest_sessionstart(session) -> None:
    """Say once, even under -q, which COCO sample this run uses (CI logs should tell)."""
    where = REAL_SAMPLE or Path("<session tmp>/shapes")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"COCO sample: {describe_sample(where)}")


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory) -> Path:
    """The built-in shapes set, generated once per session into a temp cache."""
    from trial.runtime.shapes import make_shapes_coco

    return make_shapes_coco(tmp_path_factory.mktemp("cache") / "shapes")


@pytest.fixture(scope="session")
def coco_sample(shapes_root: Path) -> Path:
    """A COCO 2017-layout sample: the real one when present, else the generated shapes set."""
    return REAL_SAMPLE or shapes_root


@pytest.fixture(scope="session")
def val_image(coco_sample: Path) -> str:
    """``val2017/<file>`` of the sample's first validation image."""
    return "val2017/" + sorted(p.name for p in (coco_sample / "val2017").iterdir())[0]
