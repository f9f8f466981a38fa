"""The real thing: build the `cpu` variant with buildah through `invoke build-image`, then
`invoke test-image` on it, check that no build-time credential reached the image, and that an
unchanged rebuild is skipped by its content hash.

Needs buildah + debootstrap (ci/install-system.sh) and ci/setup.sh's cached mmcv wheel. The images
are tagged under a test-only repository and removed afterwards; the debootstrap base is kept.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
from images_helpers import remove_images

from common import REPO_ROOT as REPO
from common import cache_root
from images import buildah, wheelhouse
from images.matrix import MATRIX_PATH, expand_matrix, load_matrix, select
from images.plan import repository

pytestmark = [pytest.mark.slow, pytest.mark.buildah, pytest.mark.timeout(1500)]


TEST_REGISTRY = "localhost/mmdet-det-test"
DUMMY = f"dummy-s3cret-{uuid.uuid4().hex[:12]}"


def invoke(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_refs() -> list[str]:
    out = buildah.run_buildah("images", "--format", "{{.Name}}:{{.Tag}}", capture=True)
    return [ref for ref in out.split() if ref.startswith(repository(TEST_REGISTRY))]


test_refs.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def cpu_build(tmp_path_factory):
    """Build the cpu variant once for this module; yield (readable ref, content ref, output)."""
    buildah.require_buildah()
    spec = cpu_spec()
    wheels = wheelhouse.find_wheels(spec, "auto")
    if not any(w.name.startswith("mmcv-") for w in wheels):
        pytest.fail(f"no cached mmcv wheel under {cache_root()}; run ci/setup.sh first")
    tmp = tmp_path_factory.mktemp("buildah")
    house = tmp / "wheelhouse"  # the wheelhouse = a temp dir holding exactly those wheels
    house.mkdir()
    for wheel in wheels:
        os.link(wheel, house / wheel.name)
    pip_conf = tmp / "pip.conf"  # a private-index token, as a user would hand it in
    pip_conf.write_text(f"[global]\nindex-url = https://__token__:{DUMMY}@pypi.org/simple\n")
    env = {**os.environ, "MMDET_DET_DUMMY_TOKEN": DUMMY}
    remove_images(test_refs())
    args = (
        "build-image",
        "--variant",
        "cpu",
        "--builder",
        "buildah",
        "--wheelhouse",
        str(house),
        "--registry",
        TEST_REGISTRY,
        "--pip-conf",
        str(pip_conf),
    )
    try:
        proc = invoke(*args, env=env)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        refs = sorted(test_refs(), key=len)
        assert len(refs) == 2, refs
        yield refs[0], refs[1], proc.stdout + proc.stderr, args, env
    finally:
        remove_images(test_refs())


def test_build_used_the_wheelhouse_and_the_secret(cpu_build):
    readable, content, output, *_ = cpu_build
    assert readable.endswith(":mmdet3.3.0-mmcv2.1.0-torch2.13.0-cpu-py3.11")
    assert content.startswith(readable + "-")
    assert "[image] mmcv: mmcv-2.1.0-cp311-cp311-linux_x86_64.whl from the wheelhouse" in output
    assert "[image] pip: config from build secret" in output
    assert "[smoke] passed: variant cpu" in output  # the build-time checks ran


def cpu_spec():
    return select(expand_matrix(load_matrix(MATRIX_PATH)), ["cpu"])[0]


def test_invoke_test_image_passes(cpu_build):
    readable = cpu_build[0]
    proc = invoke("test-image", readable)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    spec = cpu_spec()  # PyPI's torch: 2.13.0+cu130, a CUDA build that runs on CPU
    for check in (
        f"versions python 3.11, torch torch=={spec.torch_version}, mmcv 2.1.0, mmdet 3.3.0",
        "mmcv.ops compiled: nms and RoIAlign on CPU",
        "determined.core, mmdet.models, pycocotools",
        "pip check clean",
    ):
        assert check in proc.stdout, proc.stdout


def test_labels_and_environment(cpu_build):
    _readable, content, *_ = cpu_build
    config = buildah.inspect_image(content)["OCIv1"]["config"]
    labels = config["Labels"]
    assert labels["io.mmdet-determined.variant"] == "cpu"
    assert labels["io.mmdet-determined.content-hash"] == content.rsplit("-", 1)[1]
    assert labels["io.mmdet-determined.torch"] == cpu_spec().torch_pin  # torch==2.13.0
    assert labels["org.opencontainers.image.revision"] not in ("", "unknown")
    assert "PIP_CONSTRAINT=/opt/mmdet-determined/constraints.txt" in config["Env"]


def test_no_credential_in_labels_history_environment_or_files(cpu_build):
    _readable, content, *_ = cpu_build
    inspected = json.dumps(buildah.inspect_image(content))
    assert "History" in inspected and "Labels" in inspected and "Env" in inspected
    assert DUMMY not in inspected
    ctr = buildah.run_buildah("from", "--pull-never", content, capture=True).strip()
    try:
        proc = subprocess.run(
            buildah.buildah_cmd(
                "run",
                "--isolation=chroot",
                ctr,
                "--",
                "grep",
                "-rlF",
                DUMMY,
                "/etc",
                "/root",
                "/opt/mmdet-determined",
                "/opt/venv/pyvenv.cfg",
            ),
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        subprocess.run(buildah.buildah_cmd("rm", ctr), capture_output=True, check=False)
    assert proc.returncode == 1, f"secret found in: {proc.stdout} {proc.stderr}"


def test_leak_check_sees_a_token_passed_the_wrong_way(tmp_path):
    # Negative control: a token handed in as a build-arg lands in the image's history, and the
    # inspection used above finds it there.
    buildah.ensure_debian_base()
    (tmp_path / "Dockerfile").write_text(
        f'FROM {buildah.DEBIAN_BASE}\nARG TOKEN\nRUN test -n "$TOKEN"\n'
    )
    ref = f"{repository(TEST_REGISTRY)}:leaky"
    buildah.run_buildah(
        "bud",
        "--isolation=chroot",
        "--pull=never",
        "--build-arg",
        f"TOKEN={DUMMY}",
        "--tag",
        ref,
        str(tmp_path),
        capture=True,
    )
    try:
        assert DUMMY in json.dumps(buildah.inspect_image(ref)["History"])
    finally:
        remove_images([ref])


def test_unchanged_rebuild_is_skipped_by_content_hash(cpu_build):
    _readable, content, _output, args, env = cpu_build
    proc = invoke(*args, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"cpu: skipped {content}: content-hash tag exists (local)" in proc.stdout
    dry = invoke(*args, "--dry-run", env=env)
    assert "decision:  SKIP (content-hash tag exists (local)" in dry.stdout
