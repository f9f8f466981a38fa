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


NO_DAEMON = (
    "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
    "Is the docker daemon running?"
)


def fake_docker(tmp_path, monkeypatch, *, info_rc: int, run_err: str) -> None:
    """A docker CLI on PATH: ``docker info`` exits ``info_rc`` (no daemon: 1, as the real CLI),
    ``docker run`` prints ``run_err`` and its usage hint, exits 125."""
    script = tmp_path / "bin" / "docker"
    script.parent.mkdir()
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = info ]; then echo "{NO_DAEMON}" >&2; exit {info_rc}; fi\n'
        f"echo 'docker: {run_err}' >&2\necho >&2\n"
        "echo \"Run 'docker run --help' for more information\" >&2\nexit 125\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin:/bin")


def test_docker_without_a_daemon_says_so_not_its_usage_hint(tmp_path, monkeypatch):
    """`test-image --builder docker` without a daemon showed only "Run 'docker run --help' for
    more information" (issue 29, C3)."""
    fake_docker(tmp_path, monkeypatch, info_rc=1, run_err=NO_DAEMON)
    with pytest.raises(BuildError) as err:
        run_smoke("img:1", builder="docker")
    assert "docker cannot reach its daemon (Cannot connect to the Docker daemon" in str(err.value)
    assert "--builder buildah" in str(err.value) and "--help" not in str(err.value)


def test_a_tool_error_is_reported_not_the_usage_hint_after_it(tmp_path, monkeypatch):
    fake_docker(tmp_path, monkeypatch, info_rc=0, run_err="invalid reference format.")
    with pytest.raises(BuildError) as err:
        run_smoke("img:1", builder="docker")
    assert str(err.value) == "smoke checks failed in img:1: docker: invalid reference format."
