"""Thin buildah executor: every call goes through ``buildah_cmd`` (storage options in one place).

buildah runs as root with ``--isolation=chroot`` for RUN steps; there is no daemon and no registry to
pull from. Its storage driver is ``storage_driver()``: overlay where the kernel mounts it (layers
shared, a container starts without copying its image), else vfs (every layer a full copy). podman,
which serves the local Determined cluster's agents (devcluster/), uses the same storage and driver,
so an image built here is what the agents run.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from errors import BuildError

STORAGE_ROOT = Path("/var/lib/containers/storage")
DEBIAN_BASE = "localhost/debian:bookworm"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@functools.cache
def storage_driver() -> str:
    """``$MMDET_DET_STORAGE_DRIVER``, else the driver the storage already uses (a store cannot
    switch), else overlay when this kernel mounts it, else vfs."""
    chosen = os.environ.get("MMDET_DET_STORAGE_DRIVER", "")
    if chosen:
        return chosen
    for driver in ("overlay", "vfs"):
        if (STORAGE_ROOT / f"{driver}-images").is_dir():
            return driver
    return "overlay" if _overlay_mounts() else "vfs"


def _overlay_mounts() -> bool:
    """True when an overlay mount works here (root and a kernel with overlayfs)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    with tempfile.TemporaryDirectory(prefix="overlay-probe-") as tmp:
        dirs = [os.path.join(tmp, d) for d in ("lower", "upper", "work", "merged")]
        for d in dirs:
            os.mkdir(d)
        opts = f"lowerdir={dirs[0]},upperdir={dirs[1]},workdir={dirs[2]}"
        mounted = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, dirs[3]],
                                 capture_output=True).returncode == 0  # fmt: skip
        if mounted:
            subprocess.run(["umount", dirs[3]], capture_output=True)
        return mounted


def storage_opts() -> tuple[str, ...]:
    """The global options buildah and podman take to use the project's storage."""
    return (f"--storage-driver={storage_driver()}",)


def buildah_cmd(*args: str) -> list[str]:
    """The argv for one buildah call with the project's storage options."""
    return ["buildah", *storage_opts(), *args]


def require_buildah() -> None:
    """Raise a one-line BuildError when buildah is not installed."""
    if shutil.which("buildah") is None:
        raise BuildError("buildah not found on PATH; install it with: bash ci/install-system.sh")


def run_buildah(*args: str, capture: bool = False) -> str:
    """Run buildah; raise BuildError naming the command on failure. Returns stdout when captured."""
    argv = buildah_cmd(*args)
    proc = subprocess.run(argv, text=True, capture_output=capture, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or "").strip().splitlines()[-1:] if capture else []
        raise BuildError(
            f"`{' '.join(argv[:4])} …` failed (exit {proc.returncode}) {' '.join(detail)}"
        )
    return proc.stdout if capture else ""


def image_exists(ref: str) -> bool:
    """True when a local image named ``ref`` exists in buildah's storage."""
    argv = buildah_cmd("inspect", "--type", "image", "--format", "{{.FromImageID}}", ref)
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def image_id(ref: str) -> str:
    """The full ID of a local image."""
    return run_buildah(
        "inspect", "--type", "image", "--format", "{{.FromImageID}}", ref, capture=True
    ).strip()


def image_names(image_id: str) -> list[str]:
    """The names (tags) a local image still has."""
    names = run_buildah(
        "images", "--noheading", "--format", "{{.ID}} {{.Name}}:{{.Tag}}", capture=True
    )
    short = image_id[:12]
    return [
        line.split()[1]
        for line in names.splitlines()
        if line.startswith(short) and "<none>" not in line.split()[1]
    ]


def inspect_image(ref: str) -> dict:
    """``buildah inspect`` of a local image as a dict (labels, history, OCI config)."""
    return json.loads(run_buildah("inspect", "--type", "image", ref, capture=True))


def ensure_debian_base(ref: str = DEBIAN_BASE, *, mirror: str = DEBIAN_MIRROR) -> bool:
    """Make ``ref`` from ``debootstrap --variant=minbase`` unless it exists. True when it was built.

    buildah has no ``import``: debootstrap writes straight into a mounted scratch container,
    which is then committed.
    """
    require_buildah()
    if image_exists(ref):
        return False
    if shutil.which("debootstrap") is None:
        raise BuildError(
            "debootstrap not found on PATH; install it with: bash ci/install-system.sh"
        )
    ctr = run_buildah("from", "scratch", capture=True).strip()
    try:
        mnt = run_buildah("mount", ctr, capture=True).strip()
        _debootstrap(mnt, mirror=mirror)
        run_buildah("umount", ctr, capture=True)
        env = ("--env", "LANG=C.UTF-8", "--env", f"PATH={BASE_PATH}")
        run_buildah("config", *env, "--cmd", "/bin/bash", ctr, capture=True)
        run_buildah("commit", "--quiet", ctr, ref, capture=True)
    finally:
        subprocess.run(buildah_cmd("rm", ctr), capture_output=True, check=False)
    return True


def _debootstrap(target: str, *, mirror: str) -> None:
    """Run debootstrap into ``target`` and drop apt caches so the base layer stays small."""
    with tempfile.TemporaryDirectory(prefix="debootstrap-") as scratch:
        log = os.path.join(scratch, "debootstrap.log")
        argv = ["debootstrap", "--variant=minbase", DEBIAN_SUITE, target, mirror]
        with open(log, "w") as out:
            proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
        if proc.returncode != 0:
            with open(log) as f:
                tail = f.read().strip().splitlines()[-1:]
            raise BuildError(f"debootstrap {DEBIAN_SUITE} from {mirror} failed: {' '.join(tail)}")
    for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
        path = os.path.join(target, sub)
        for name in os.listdir(path):
            full = os.path.join(path, name)
            if os.path.isfile(full):
                os.remove(full)
