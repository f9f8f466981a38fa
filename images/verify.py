"""`invoke test-image TAG`: run images/scripts/smoke_check.py inside a built image.

buildah: a throwaway working container (``buildah from`` / ``run`` / ``rm``); docker: ``docker run
--rm``, with ``--gpus all`` when ``nvidia-smi`` sees a GPU so the CUDA op check runs too.
On a CUDA image (buildah) the host also proves mmcv's arches: cuobjdump (images/cudacheck.py) on
the container's mounted filesystem against the image's TORCH_CUDA_ARCH_LIST label, so the runtime
image needs no CUDA tools of its own.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from errors import BuildError
from images import buildah, cudacheck, plan
from images.build import check_docker_daemon

SMOKE = ("python", "/opt/mmdet-determined/smoke_check.py")
LABEL_PREFIX = "io.mmdet-determined."
ARCH_LABEL = LABEL_PREFIX + "torch-cuda-arch-list"
VENV = "opt/venv"


def test_image(ref: str, *, builder: str = plan.BUILDAH) -> str:
    """Run the smoke checks in ``ref``; return their output, raise BuildError when one fails."""
    if builder not in plan.BUILDERS:
        raise BuildError(
            f"--builder {builder!r} unknown; choose one of: {', '.join(plan.BUILDERS)}"
        )
    if builder == plan.BUILDAH:
        return _test_buildah(ref)
    return _test_docker(ref)


def smoke_argv(ref: str, *, builder: str, gpu: bool = False, container: str = "CTR") -> list[str]:
    """The command that runs the checks (pure; ``container`` is buildah's working container)."""
    if builder == plan.BUILDAH:
        return buildah.buildah_cmd("run", "--isolation=chroot", container, "--", *SMOKE)
    return ["docker", "run", "--rm", *(["--gpus", "all"] if gpu else []), ref, *SMOKE]


def _test_buildah(ref: str) -> str:
    buildah.require_buildah()
    if not buildah.image_exists(ref):
        raise BuildError(
            f"image {ref} not found in buildah's storage; build it with "
            "invoke build-image --variant V --builder buildah"
        )
    labels = buildah.inspect_image(ref).get("OCIv1", {}).get("config", {}).get("Labels") or {}
    if not any(key.startswith(LABEL_PREFIX) for key in labels):
        raise BuildError(f"image {ref} has no {LABEL_PREFIX}* labels: not built by build-image")
    ctr = buildah.run_buildah("from", "--pull-never", ref, capture=True).strip()
    try:
        proc = subprocess.run(
            smoke_argv(ref, builder=plan.BUILDAH, container=ctr),
            capture_output=True,
            text=True,
            check=False,
        )
        out = _result(ref, proc)
        if labels.get(ARCH_LABEL):
            out += _check_arches(ref, ctr, labels[ARCH_LABEL])
    finally:
        subprocess.run(buildah.buildah_cmd("rm", ctr), capture_output=True, check=False)
    return out


def _check_arches(ref: str, ctr: str, arch_list: str) -> str:
    """cuobjdump from the host on the container's mmcv/_ext*.so; raise naming a missing arch."""
    mnt = buildah.run_buildah("mount", ctr, capture=True).strip()
    try:
        report = cudacheck.check_extension(Path(mnt) / VENV, arch_list)
    except cudacheck.ArchCheckError as err:
        raise BuildError(f"arch check of {ref} could not run: {err}") from err
    finally:
        subprocess.run(buildah.buildah_cmd("umount", ctr), capture_output=True, check=False)
    if not report.ok:
        raise BuildError(f"smoke checks failed in {ref}: {report.summary()} (asked: {arch_list})")
    return f"[smoke] ok   mmcv arches (host cuobjdump): {report.summary()} (asked: {arch_list})\n"


def _test_docker(ref: str) -> str:
    if shutil.which("docker") is None:
        raise BuildError("docker not found on PATH; use --builder buildah")
    check_docker_daemon()
    gpu = (
        shutil.which("nvidia-smi") is not None
        and subprocess.run(["nvidia-smi", "-L"], capture_output=True, check=False).returncode == 0
    )
    proc = subprocess.run(
        smoke_argv(ref, builder=plan.DOCKER, gpu=gpu), capture_output=True, text=True, check=False
    )
    return _result(ref, proc)


def _result(ref: str, proc: subprocess.CompletedProcess) -> str:
    """The checks' output, or one BuildError naming the line that says what failed: a FAIL or
    an error, else the last line that is not a tool's usage hint ("Run 'docker run --help'")."""
    out = (proc.stdout or "") + (proc.stderr or "")
    if proc.returncode != 0:
        lines = [line for line in out.splitlines() if line.strip() and "--help" not in line]
        failed = [line for line in lines if "FAIL" in line or "Error" in line]
        detail = (failed or lines or ["no output"])[-1]
        raise BuildError(f"smoke checks failed in {ref}: {detail}")
    return out
