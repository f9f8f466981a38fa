"""`invoke build-image`: check the matrix, plan every requested variant, then build or skip each.

The public entrypoint is ``build_images``; the pure planning lives in images/plan.py, the version
rules in images/rules.py. This module does the I/O: digests of the files that go into the build
context, which tags already exist (local storage or the registry), the git revision, assembling the
context dir (Dockerfile, scripts/, wheelhouse/ as hard links) and running the builder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common import file_sha256
from errors import BuildError, ConfigError, one_line
from images import buildah, plan, rules, wheelhouse
from images.matrix import IMAGES_DIR, MATRIX_PATH, expand_matrix, load_matrix, select

# images/mmcvbuild.py + cudacheck.py: the builder compiles mmcv with the same C++20 fix as ci/setup.sh.
CONTEXT_FILES = ("Dockerfile", "scripts", "__init__.py", "mmcvbuild.py", "cudacheck.py")
CA_BUNDLE_ENV = ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
CA_BUNDLE_DEFAULT = "/etc/ssl/certs/ca-certificates.crt"
PIP_CONF_ENV = "MMDET_DET_PIP_CONF"


@dataclass(frozen=True)
class BuildRequest:
    """What the user asked ``invoke build-image`` for."""

    variants: tuple[str, ...] = ()
    all: bool = False
    builder: str = plan.BUILDAH
    registry: str | None = None
    push: bool = False
    dry_run: bool = False
    force: bool = False
    wheelhouse: str | None = None
    base_image: str | None = None
    pip_conf: str | None = None


def build_images(
    request: BuildRequest, *, echo: Callable[[str], None] = print
) -> list[plan.BuildPlan]:
    """Check, plan and (unless dry-run) build the requested variants. Returns the plans."""
    specs = expand_matrix(load_matrix(MATRIX_PATH))
    if request.all and request.variants:
        raise ConfigError("--variant and --all exclude each other; pass one of them")
    if not request.all and not request.variants:
        raise ConfigError(
            "no variant named: pass --variant V (repeatable, e.g. --variant cpu) or --all"
        )
    chosen = specs if request.all else select(specs, list(request.variants))
    chosen = [plan.with_base_image(spec, request.base_image) for spec in chosen]
    rules.check_all(chosen)
    if request.wheelhouse == wheelhouse.AUTO and not request.dry_run:
        for spec in chosen:
            if spec.torch_from_pypi:
                wheelhouse.fetch_torch_wheels(spec, echo=echo)
    inputs = gather_inputs(pip_conf=request.pip_conf)
    plans = [_plan_one(spec, request, inputs) for spec in chosen]
    if request.dry_run:
        echo(
            f"# dry run: nothing is built; {plan.CONTEXT} = a temp dir with images/Dockerfile, "
            "images/scripts/ and wheelhouse/"
        )
        for one in plans:
            echo(plan.describe(one))
        return plans
    for one in plans:
        _execute(one, echo=echo)
    return plans


def gather_inputs(*, pip_conf: str | None = None) -> plan.BuildInputs:
    """Digests of the context files, the git revision/epoch, and the secrets to mount."""
    files = {rel: file_sha256(IMAGES_DIR / rel) for rel in context_files()}
    return plan.BuildInputs(
        files=files,
        revision=_git("rev-parse", "HEAD") or "unknown",
        source_url=_git("remote", "get-url", "origin") or "unknown",
        source_date_epoch=int(_git("log", "-1", "--format=%ct", "--", str(IMAGES_DIR)) or 0),
        secrets=_secrets(pip_conf),
    )


def context_files() -> list[str]:
    """Paths (relative to images/) that are copied into the build context."""
    out = []
    for name in CONTEXT_FILES:
        path = IMAGES_DIR / name
        items = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        out += [str(p.relative_to(IMAGES_DIR)) for p in items if "__pycache__" not in p.parts]
    return out


def existing_refs(refs: list[str], *, builder: str, registry: str | None) -> dict[str, str]:
    """Which of ``refs`` exist: ``{ref: "local" | "registry"}``. Missing tools mean "not found"."""
    found: dict[str, str] = {}
    for ref in refs:
        if _exists_locally(ref, builder):
            found[ref] = "local"
        elif registry and _exists_in_registry(ref, builder):
            found[ref] = "registry"
    return found


def _plan_one(spec, request: BuildRequest, inputs: plan.BuildInputs) -> plan.BuildPlan:
    wheels = wheelhouse.wheel_digests(wheelhouse.find_wheels(spec, request.wheelhouse))
    kwargs = dict(
        inputs=inputs,
        wheels=wheels,
        builder=request.builder,
        registry=request.registry,
        push=request.push,
        force=request.force,
    )
    draft = plan.plan_build(spec, **kwargs)
    existing = existing_refs(
        [draft.content_ref], builder=request.builder, registry=request.registry
    )
    return plan.plan_build(spec, existing=existing, **kwargs) if existing else draft


def _execute(one: plan.BuildPlan, *, echo: Callable[[str], None]) -> None:
    if one.skip:
        echo(f"[build-image] {one.spec.key}: skipped {one.content_ref}: {one.reason}")
        _retag(one)
        return
    if shutil.which(one.command[0]) is None:
        raise BuildError(
            f"{one.command[0]} not found on PATH; install it (bash "
            "ci/install-system.sh for buildah) or pick another --builder"
        )
    if one.builder == plan.DOCKER:
        check_docker_daemon()
    if one.builder == plan.BUILDAH:
        base = one.spec.base_image
        if base == buildah.DEBIAN_BASE and buildah.ensure_debian_base(base):
            echo(f"[build-image] made base image {base} with debootstrap")
    echo(f"[build-image] {one.spec.key}: building {one.content_ref}")
    replaced = _local_ids(one)
    with tempfile.TemporaryDirectory(prefix="mmdet-det-context-") as ctx:
        assemble_context(Path(ctx), wheels=one.wheels)
        _run(
            [
                ctx if arg == plan.CONTEXT else arg.replace(f"{plan.CONTEXT}/", f"{ctx}/")
                for arg in one.command
            ],
            what=f"building variant {one.spec.key}",
        )
    for cmd in one.push_commands:
        _run(list(cmd), what=f"pushing {cmd[-1]}")
    _drop_untagged(one, replaced)
    echo(f"[build-image] {one.spec.key}: built {one.readable_ref} and {one.content_ref}")


def check_docker_daemon() -> None:
    """``docker info`` answers, or one line with the CLI's own reason (no daemon, no permission);
    build-image and test-image ask it before they run docker."""
    proc = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        reason = one_line(proc.stderr or proc.stdout or f"exit code {proc.returncode}")[:300]
        raise BuildError(
            f"--builder docker: docker cannot reach its daemon ({reason}); start Docker or set "
            "DOCKER_HOST, or use --builder buildah (no daemon needed)"
        )


def assemble_context(ctx: Path, *, wheels: tuple[tuple[str, str], ...]) -> None:
    """Dockerfile + scripts/ + wheelhouse/ (hard links to the planned wheels) in ``ctx``."""
    for rel in context_files():
        dest = ctx / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(IMAGES_DIR / rel, dest)
    house = ctx / "wheelhouse"
    house.mkdir()
    (house / "README").write_text("wheels handed to the build (bind-mounted, never copied in)\n")
    for path, _digest in wheels:
        src = Path(path)
        if not src.is_file():
            raise BuildError(f"planned wheel {src} disappeared; rerun invoke build-image")
        try:
            os.link(src, house / src.name)
        except OSError:
            shutil.copy2(src, house / src.name)


def _retag(one: plan.BuildPlan) -> None:
    if one.builder == plan.BUILDAH and buildah.image_exists(one.content_ref):
        buildah.run_buildah("tag", one.content_ref, one.readable_ref, capture=True)
    elif one.builder == plan.DOCKER and shutil.which("docker"):
        subprocess.run(
            ["docker", "tag", one.content_ref, one.readable_ref], check=False, capture_output=True
        )


def _local_ids(one: plan.BuildPlan) -> set[str]:
    """IDs of the local images that the new build's tags will move away from (buildah only)."""
    if one.builder != plan.BUILDAH:
        return set()
    return {buildah.image_id(ref) for ref in one.refs if buildah.image_exists(ref)}


def _drop_untagged(one: plan.BuildPlan, old_ids: set[str]) -> None:
    """A forced rebuild leaves the old image untagged (with vfs a full copy), so remove it."""
    for image_id in old_ids - {buildah.image_id(ref) for ref in one.refs}:
        if not buildah.image_names(image_id):
            buildah.run_buildah("rmi", image_id, capture=True)


def _exists_locally(ref: str, builder: str) -> bool:
    if builder == plan.BUILDAH:
        return shutil.which("buildah") is not None and buildah.image_exists(ref)
    argv = ["docker", "image", "inspect", ref]
    return shutil.which("docker") is not None and _quiet(argv)


def _exists_in_registry(ref: str, builder: str) -> bool:
    if builder == plan.DOCKER and shutil.which("docker"):
        return _quiet(["docker", "buildx", "imagetools", "inspect", ref])
    return shutil.which("skopeo") is not None and _quiet(
        ["skopeo", "inspect", "--raw", f"docker://{ref}"]
    )


def _quiet(argv: list[str]) -> bool:
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def _run(argv: list[str], *, what: str) -> None:
    proc = subprocess.run(argv, check=False)
    if proc.returncode != 0:
        raise BuildError(
            f"{what} failed: `{' '.join(argv[:4])} …` exited {proc.returncode} "
            "(its output is above)"
        )


def _secrets(pip_conf: str | None) -> tuple[tuple[str, str], ...]:
    out = []
    bundle = next((os.environ[k] for k in CA_BUNDLE_ENV if os.environ.get(k)), CA_BUNDLE_DEFAULT)
    if Path(bundle).is_file():
        out.append(("ca_bundle", bundle))
    conf = pip_conf or os.environ.get(PIP_CONF_ENV)
    if conf:
        if not Path(conf).is_file():
            raise ConfigError(f"pip config {conf} (--pip-conf / ${PIP_CONF_ENV}) does not exist")
        out.append(("pip_conf", str(Path(conf).resolve())))
    return tuple(out)


def _git(*args: str) -> str:
    proc = subprocess.run(
        ["git", "-C", str(IMAGES_DIR), *args], capture_output=True, text=True, check=False
    )
    return proc.stdout.strip() if proc.returncode == 0 else ""
