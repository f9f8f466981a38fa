"""`invoke test-image` pieces that need no image: the argv per builder and how failures read."""

from __future__ import annotations

import subprocess

import pytest

from errors import BuildError
from images import buildah
from images.verify import _result, smoke_argv
from images.verify import test_image as run_smoke

SCRIPT = "/opt/mmdet-determined/smoke_check.py"


def test_buildah_argv_runs_the_checks_in_the_working_container():
    argv = smoke_argv("img", builder="buildah", container="ctr-1")
    assert argv == [
        "buildah",
        *buildah.storage_opts(),
        "run",
        "--isolation=chroot",
        "ctr-1",
        "--",
        "python",
        SCRIPT,
    ]


def test_docker_argv_asks_for_gpus_only_when_one_is_visible():
    assert smoke_argv("img", builder="docker") == ["docker", "run", "--rm", "img", "python", SCRIPT]
    assert smoke_argv("img", builder="docker", gpu=True)[3:5] == ["--gpus", "all"]


def test_a_failed_check_becomes_one_line_naming_it():
    out = "[smoke] ok   versions\n[smoke] FAIL mmcv.ops.nms on CPU kept [0, 1], expected [0, 2]\n"
    proc = subprocess.CompletedProcess([], 1, stdout=out, stderr="")
    with pytest.raises(BuildError) as err:
        _result("img:1", proc)
    assert str(err.value) == (
        "smoke checks failed in img:1: [smoke] FAIL mmcv.ops.nms on CPU kept "
        "[0, 1], expected [0, 2]"
    )


def test_unknown_builder():
    with pytest.raises(BuildError, match="--builder 'podman' unknown"):
        run_smoke("img", builder="podman")
