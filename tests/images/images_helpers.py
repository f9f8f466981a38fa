"""Helpers for the image tests: write variant matrices to YAML and load them like the real one."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from images import buildah
from images.matrix import MATRIX_PATH, ImageSpec, expand_matrix, load_matrix


def real_matrix() -> dict:
    """images/matrix.yaml as parsed YAML (a fresh copy each call)."""
    return copy.deepcopy(yaml.safe_load(MATRIX_PATH.read_text()))


def specs_from(doc: dict, tmp_path: Path) -> list[ImageSpec]:
    """Write ``doc`` as a matrix file and load it through the same code as images/matrix.yaml."""
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return expand_matrix(load_matrix(path), source=str(path))


def variant_with(tmp_path: Path, key: str, **changes) -> ImageSpec:
    """The real matrix's ``key`` variant with some fields changed, loaded from a written file."""
    doc = real_matrix()
    doc["variants"][key].update(changes)
    return {spec.key: spec for spec in specs_from(doc, tmp_path)}[key]


def remove_images(refs) -> None:
    """Remove local images by name, ignoring names that do not exist (the tests' clean-up)."""
    for ref in refs:
        if buildah.image_exists(ref):
            buildah.run_buildah("rmi", "--force", ref, capture=True)
