"""The user-facing verbs through the real `invoke` CLI: listing, dry runs, one-line errors."""

from __future__ import annotations

import subprocess
import sys

from common import REPO_ROOT as REPO
from images import buildah


def invoke(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_list_and_help():
    listing = invoke("--list").stdout
    assert "build-image" in listing and "test-image" in listing
    help_text = invoke("--help", "build-image").stdout
    for option in (
        "--variant",
        "--all",
        "--builder",
        "--push",
        "--registry",
        "--dry-run",
        "--wheelhouse",
        "--base-image",
        "--force",
        "--check",
    ):
        assert option in help_text


def test_dry_run_all_prints_every_variant():
    proc = invoke("build-image", "--all", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    for key in ("cu121", "cu124", "cu130", "cpu"):
        assert f"variant {key}:" in proc.stdout
    opts = " ".join(buildah.storage_opts())
    assert proc.stdout.count(f"  command:   buildah {opts} bud") == 4


def test_unknown_variant_is_one_line_and_exit_1():
    proc = invoke("build-image", "--variant", "cu999", "--dry-run")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: unknown image variant 'cu999'; choose from: cu121, cu124, cu130, cpu (or --all)"
    ]


def test_push_without_registry_is_refused():
    proc = invoke("build-image", "--variant", "cpu", "--push", "--dry-run")
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: --push needs --registry (e.g. --registry ghcr.io/acme)"


def test_test_image_of_a_missing_image_is_one_line():
    proc = invoke("test-image", "localhost/mmdet-determined:does-not-exist")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "not found in buildah's storage" in lines[0]


def test_readme_check_passes():
    proc = invoke("build-image", "--check")
    assert proc.returncode == 0, proc.stderr
    assert "is current" in proc.stdout
