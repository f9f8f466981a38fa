"""Thin buildah executor: every call goes through ``buildah_cmd`` (storage options in one place).

buildah runs as root with ``--storage-driver=vfs`` (no overlay in these sandboxes) and
``--isolation=chroot`` for RUN steps; there is no daemon and no registry to pull from.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

from errors import BuildError

STORAGE_OPTS = ("--storage-driver=vfs",)
DEBIAN_BASE = "localhost/debian:bookworm"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def buildah_cmd(*args: str) -> list[str]:
    """The argv for one buildah call with the project's storage options."""
    return ["buildah", *STORAGE_OPTS, *args]


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
