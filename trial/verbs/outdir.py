"""All-or-nothing output directories for ``invoke export`` / ``invoke predict``.

Everything is written into a hidden temp directory beside ``--out``; only a complete result is
renamed to ``--out``. An error (or Ctrl-C) removes the temp directory, so ``--out`` never holds a
half-written export or half the predictions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import common
from errors import ConfigError
from trial.verbs.options import directory_option


def check_new_dir(out: str | Path, *, option: str = "--out") -> Path:
    """``out`` as an absolute path; an error if it is (or lies below) a file, or is a directory
    that is not empty."""
    path = directory_option(out, option)
    if path.exists() and any(path.iterdir()):
        raise ConfigError(f"{option} {path} already exists and is not empty; pick a new directory")
    return path


@contextmanager
def atomic_dir(out: str | Path, *, option: str = "--out") -> Iterator[Path]:
    """Yield a temp directory; on success it becomes ``out`` (new or empty), else it is deleted."""
    with common.atomic_dir(check_new_dir(out, option=option)) as tmp:
        yield tmp
