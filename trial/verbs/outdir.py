"""All-or-nothing outputs: directories for ``invoke export`` / ``invoke predict``, single files.

Everything is written into a hidden temp directory beside ``--out``; only a complete result is
renamed to ``--out``. An error (or Ctrl-C) removes the temp directory, so ``--out`` never holds a
half-written export or half the predictions.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from errors import ConfigError


def check_new_dir(out: str | Path, *, option: str = "--out") -> Path:
    """``out`` as an absolute path; an error if it exists and is not an empty directory."""
    path = Path(out).expanduser().resolve()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(f"{option} {path} already exists and is not empty; pick a new directory")
    return path


@contextmanager
def atomic_dir(out: str | Path, *, option: str = "--out") -> Iterator[Path]:
    """Yield a temp directory; on success it becomes ``out`` (new or empty), else it is deleted."""
    final = check_new_dir(out, option=option)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".incomplete", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary directory
    try:
        yield tmp
        if final.exists():
            final.rmdir()  # empty (checked above); os.replace cannot replace a directory
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Yield a temp file beside ``path``; on success it replaces ``path`` with the usual
    permissions (0666 less the umask, like ``open``: mkstemp's files are private), else it is
    deleted. A reader never sees a half-written file."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        mode, dir=final.parent, prefix=f".{final.name}.", suffix=".incomplete", delete=False
    ) as f:
        tmp = Path(f.name)
        try:
            yield f
        except BaseException:
            f.close()
            tmp.unlink(missing_ok=True)
            raise
    tmp.chmod(0o666 & ~_umask())
    os.replace(tmp, final)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
