"""The image an experiment runs is one `invoke build-image` makes: the matrix's tag at --registry.

Pure checks of images/refs.py against the real matrix, plus `invoke build-image --builder docker`
where no Docker daemon can run (a stand-in `docker` CLI answers as the real one does without one).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from common import REPO_ROOT as REPO
from errors import ConfigError
from images.matrix import expand_matrix, load_matrix
from images.refs import resolve_experiment_images, resolve_ref
from trial.settings.hparams import EXPERIMENTS_DIR, load_experiment

SPECS = expand_matrix(load_matrix())
TAG = next(spec for spec in SPECS if spec.key == "cu121").readable_tag
CPU_TAG = next(spec for spec in SPECS if spec.key == "cpu").readable_tag


@pytest.mark.parametrize("name", ["retinanet", "maskrcnn", "gfl", "retinanet-asha"])
def test_every_bundled_experiment_runs_an_image_the_project_builds(name):
    experiment = load_experiment(EXPERIMENTS_DIR / f"{name}.yaml")
    resolved = resolve_experiment_images(experiment, SPECS, registry="ghcr.io/acme")
    image = resolved["environment"]["image"]["cuda"]
    built = {f"ghcr.io/acme/mmdet-determined:{spec.readable_tag}" for spec in SPECS}
    assert image in built  # the readable tag build-image --registry ghcr.io/acme pushes
    assert experiment["environment"]["image"]["cuda"] != image  # the input is not changed


@pytest.mark.parametrize(
    ("ref", "registry", "expected"),
    [
        (f"mmdet-determined:{TAG}", "ghcr.io/acme/", f"ghcr.io/acme/mmdet-determined:{TAG}"),
        (f"reg:5000/a/mmdet-determined:{TAG}", None, f"reg:5000/a/mmdet-determined:{TAG}"),
        (f"reg.io/mmdet-determined:{TAG}-0123456789ab", "reg.io", f"reg.io/mmdet-determined:{TAG}-0123456789ab"),
        ("nvcr.io/nvidia/pytorch:24.01-py3", None, "nvcr.io/nvidia/pytorch:24.01-py3"),  # not ours
    ],
)  # fmt: skip
def test_project_references_get_the_registry(ref, registry, expected):
    assert resolve_ref(ref, SPECS, registry=registry, field="image.cuda") == expected


@pytest.mark.parametrize(
    ("ref", "registry", "message"),
    [
        (f"mmdet-determined:{TAG}", None, "has no registry: a cluster cannot pull it; pass --registry R"),
        (f"localhost/mmdet-determined:{TAG}", "r.io", "exists only on the machine that built it"),
        (f"a.io/mmdet-determined:{TAG}", "b.io", "is in registry 'a.io', not --registry 'b.io'"),
        ("mmdet-determined:mmdet3.3.0-mmcv2.1.0-torch2.0.0-cu118-py3.10", "r.io",
         "is no variant of images/matrix.yaml, so invoke build-image never makes it; use one of: "),
        (f"r.io/mmdet-determined:{CPU_TAG}", None, "is the cpu variant, which does not fit environment.image.cuda"),
    ],
)  # fmt: skip
def test_a_reference_the_project_does_not_build_is_one_line(ref, registry, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_ref(ref, SPECS, registry=registry, field="image.cuda")


@pytest.mark.parametrize(
    "ref", [f"mmdet-determined:{CPU_TAG}", f"localhost/mmdet-determined:{CPU_TAG}"]
)
def test_a_cluster_on_this_machine_runs_the_image_built_here(ref):
    """`invoke cluster up`'s agents run images from this machine's storage: `localhost/` is fine
    there, and only there."""
    local = resolve_ref(ref, SPECS, registry=None, field="image.cpu", local_cluster=True)
    assert local == f"localhost/mmdet-determined:{CPU_TAG}"
    assert (
        resolve_ref(  # an explicit registry still wins: the local cluster can pull too
            f"mmdet-determined:{CPU_TAG}",
            SPECS,
            registry="r.io",
            field="image.cpu",
            local_cluster=True,
        )
        == f"r.io/mmdet-determined:{CPU_TAG}"
    )
    with pytest.raises(
        ConfigError, match=r"exists only on the machine that built it|has no registry"
    ):
        resolve_ref(ref, SPECS, registry=None, field="image.cpu")  # a remote master


def test_build_with_docker_and_no_daemon_says_why_docker_cli_standin(tmp_path):
    """The real CLI prints this line for every daemon call when dockerd is not running."""
    standin = tmp_path / "bin" / "docker"
    standin.parent.mkdir()
    standin.write_text(
        "#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
        "Is the docker daemon running?' >&2\nexit 1\n"
    )
    standin.chmod(0o755)
    env = {**os.environ, "PATH": f"{standin.parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        [sys.executable, "-m", "invoke", "build-image", "--variant", "cpu", "--builder", "docker"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: --builder docker: docker cannot reach its daemon (Cannot connect to the Docker "
        "daemon at unix:///var/run/docker.sock. Is the docker daemon running?); start Docker or "
        "set DOCKER_HOST, or use --builder buildah (no daemon needed)"
    )
