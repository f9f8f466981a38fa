"""Determined's master and agent, built from its Go module by ``devcluster/go``, cached per version.

``devcluster/go`` is a small Go module of the project's own: its go.mod requires
``github.com/determined-ai/determined v0.38.1``, its tools.go imports the two ``cmd`` packages, and it
replaces HPE's Slurm/PBS launcher client (a directory Determined's module zip lacks) with a stub
that only the dispatcher resource manager would call. It also holds ``podman-docker-shim``.

The binaries land in ``$MMDET_DET_CACHE/determined/<version>-<hash of devcluster/go>/bin`` with the
master's ``static/`` (migrations, entrypoint scripts) copied from the module beside them; a second
``up`` finds them and builds nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from common import cache_root
from devcluster.spec import DETERMINED_VERSION
from errors import ProjectError

GO_DIR = Path(__file__).resolve().parent / "go"
MODULE = "github.com/determined-ai/determined"
PACKAGES = {
    "determined-master": f"{MODULE}/master/cmd/determined-master",
    "determined-agent": f"{MODULE}/agent/cmd/determined-agent",
    "podman-docker-shim": "./cmd/podman-docker-shim",
}
# The master's version string: "unknown" breaks the harness wheel glob and the det CLI's parse.
LDFLAGS = {
    "determined-master": f"-X {MODULE}/master/version.Version={DETERMINED_VERSION}",
    "determined-agent": f"-X main.version={DETERMINED_VERSION}",
    "podman-docker-shim": "",
}
DEFAULT_PROXY = "https://proxy.golang.org"


def source_hash() -> str:
    """A digest of devcluster/go (go.mod, go.sum, the stub, the shim): a change rebuilds."""
    digest = hashlib.sha256()
    for path in sorted(p for p in GO_DIR.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(GO_DIR)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def install_dir() -> Path:
    return cache_root() / "determined" / f"{DETERMINED_VERSION}-{source_hash()}"


def binary(name: str) -> Path:
    return install_dir() / "bin" / name


def master_root() -> Path:
    """The master's ``root``: its ``static/`` is the module's master/static."""
    return install_dir() / "root"


def built() -> bool:
    home = install_dir()
    return (home / "build-info.json").is_file() and all(
        (home / "bin" / name).is_file() for name in PACKAGES
    )


def ensure_built(log=print) -> float:
    """Build master, agent and shim unless cached; returns the seconds the build took (0 if cached)."""
    if built():
        return 0.0
    if shutil.which("go") is None:
        raise ProjectError(
            "go not found on PATH: the master and agent are built from Determined's Go module; "
            "install Go >= 1.22 (https://go.dev/dl) and run again"
        )
    home = install_dir()
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=_mkdir(home.parent)))
    start = time.monotonic()
    try:
        env = _go_env(home.parent)
        log(f"building Determined {DETERMINED_VERSION} master and agent from the Go module "
            "(first time only: about 5 minutes on 2 cores)")  # fmt: skip
        for name, package in PACKAGES.items():
            t0 = time.monotonic()
            _go(["build", "-trimpath", "-ldflags", LDFLAGS[name], "-o", str(staging / "bin" / name),
                 package], env)  # fmt: skip
            log(f"  built {name} in {time.monotonic() - t0:.0f} s")
        module_dir = Path(_go(["list", "-m", "-f", "{{.Dir}}", MODULE], env).strip())
        shutil.copytree(module_dir / "master" / "static", staging / "root" / "static")
        seconds = time.monotonic() - start
        (staging / "build-info.json").write_text(
            json.dumps(
                {
                    "version": DETERMINED_VERSION,
                    "seconds": round(seconds, 1),
                    "go": _go(["env", "GOVERSION"], env).strip(),
                }
            )
            + "\n"
        )
        os.chmod(staging, 0o755)
        shutil.rmtree(home, ignore_errors=True)
        os.replace(staging, home)  # a complete install appears at once, or not at all
        return seconds
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _go(args: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(["go", *args], cwd=GO_DIR, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise ProjectError(f"`go {' '.join(args[:1])} …` in {GO_DIR} failed: {tail}")
    return proc.stdout


def _go_env(cache: Path) -> dict[str, str]:
    """The go command's environment: a file proxy holding Determined's .info/.mod before the
    module proxy, and the shim's go.sum entries checked against the checksum database as usual."""
    env = dict(os.environ)
    upstream = env.get("GOPROXY") or _go(["env", "GOPROXY"], env).strip() or DEFAULT_PROXY
    first = next((p for p in upstream.replace("|", ",").split(",") if p.startswith("http")), None)
    overlay = module_overlay(cache / "goproxy", first or DEFAULT_PROXY)
    env["GOPROXY"] = f"file://{overlay},{upstream}"
    env["GOFLAGS"] = "-mod=readonly"  # go.mod and go.sum are complete: never rewritten by a build
    return env


def module_overlay(root: Path, proxy: str) -> Path:
    """A file:// proxy with Determined's module: the .zip as the module proxy serves it, and the
    .info and .mod made from it.

    Seen on 2026-12-06: proxy.golang.org serves v0.38.1's .zip but answers its .info and .mod
    with 403 "This module version is not available". The .mod is the zip's go.mod byte for byte, so
    the go command still verifies both against sum.golang.org (go.sum holds the hashes).
    """
    version = f"v{DETERMINED_VERSION}"
    folder = root / MODULE / "@v"
    if (folder / "list").is_file():  # written last
        return root
    folder.mkdir(parents=True, exist_ok=True)
    url = f"{proxy.rstrip('/')}/{MODULE}/@v/{version}.zip"
    try:
        with urllib.request.urlopen(url, timeout=300) as resp:
            data = resp.read()
    except (urllib.error.URLError, OSError) as err:
        raise ProjectError(f"downloading {url} failed: {err}") from None
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        go_mod = zf.read(f"{MODULE}@{version}/go.mod")
    for name, content in (
        (f"{version}.zip", data),
        (f"{version}.mod", go_mod),
        (f"{version}.info", json.dumps({"Version": version}).encode()),
        ("list", f"{version}\n".encode()),
    ):
        tmp = folder / f".{name}.tmp"
        tmp.write_bytes(content)
        os.replace(tmp, folder / name)
    return root
