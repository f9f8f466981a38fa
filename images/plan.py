"""Plan image builds (pure): tags, content hash, build args, the builder's argv, skip decisions.

Nothing here runs a process or touches the network: the executor (images/build.py) gathers the
facts (file digests, wheel digests, which tags already exist, the git revision) and passes them in,
so ``--dry-run`` prints exactly what would run and tests check plans without a builder.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import PurePath
from urllib.parse import urlsplit, urlunsplit

from errors import ConfigError
from images.buildah import buildah_cmd
from images.matrix import IMAGE_NAME, ImageSpec

DOCKER = "docker"
BUILDAH = "buildah"
BUILDERS = (DOCKER, BUILDAH)
LOCAL_REGISTRY = "localhost"
CONTEXT = "CONTEXT"  # stands for the temp build context dir in printed plans
TARGET = "runtime"
HASH_LEN = 12
# prose only: changing it must not rebuild 20-minute images
NOT_HASHED = ("description", "verified")


@dataclass(frozen=True)
class BuildInputs:
    """Facts the executor gathered for one build run."""

    files: Mapping[str, str]  # context-relative path -> sha256 (Dockerfile, scripts/*)
    revision: str = "unknown"
    source_url: str = "unknown"  # git remote, credentials stripped (see public_url)
    source_date_epoch: int = 0
    secrets: tuple[tuple[str, str], ...] = ()  # (secret id, host file) — paths, never values


@dataclass(frozen=True)
class BuildPlan:
    """Everything about one variant's build, decided before anything runs."""

    spec: ImageSpec
    builder: str
    wheels: tuple[tuple[str, str], ...]  # (path on this machine, sha256)
    content_hash: str
    readable_ref: str
    content_ref: str
    build_args: tuple[tuple[str, str], ...]
    command: tuple[str, ...]
    push_commands: tuple[tuple[str, ...], ...]
    skip: bool
    reason: str

    @property
    def refs(self) -> tuple[str, str]:
        """Both tags of the image: readable first, content hash second."""
        return (self.readable_ref, self.content_ref)


def repository(registry: str | None) -> str:
    """``<registry>/mmdet-determined``; local images live under ``localhost/``."""
    return f"{(registry or LOCAL_REGISTRY).rstrip('/')}/{IMAGE_NAME}"


def public_url(url: str) -> str:
    """A remote URL fit for a label: ``https://user:token@host/x`` loses its user and token."""
    parts = urlsplit(url)
    if parts.scheme and "@" in parts.netloc:
        return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return url


def with_base_image(spec: ImageSpec, base_image: str | None) -> ImageSpec:
    """``--base-image``: replace the runtime base (and the builder base where it was the same)."""
    if not base_image:
        return spec
    builder = base_image if spec.builder_image == spec.base_image else spec.builder_image
    return replace(spec, base_image=base_image, builder_image=builder)


def content_hash(
    spec: ImageSpec, *, files: Mapping[str, str], wheels: tuple[tuple[str, str], ...]
) -> str:
    """sha256 over everything that shapes the image: matrix entry, Dockerfile + scripts, wheels."""
    named = [[PurePath(path).name, digest] for path, digest in wheels]
    entry = {k: v for k, v in spec.as_dict().items() if k not in NOT_HASHED}
    payload = {"spec": entry, "files": dict(sorted(files.items())), "wheels": named}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:HASH_LEN]


def plan_build(
    spec: ImageSpec,
    *,
    inputs: BuildInputs,
    wheels: tuple[tuple[str, str], ...] = (),
    builder: str = BUILDAH,
    registry: str | None = None,
    push: bool = False,
    force: bool = False,
    existing: Mapping[str, str] | None = None,
) -> BuildPlan:
    """Plan one variant. ``existing`` maps refs known to exist to where ("local"/"registry")."""
    if builder not in BUILDERS:
        raise ConfigError(f"--builder {builder!r} unknown; choose one of: {', '.join(BUILDERS)}")
    if push and not registry:
        raise ConfigError("--push needs --registry (e.g. --registry ghcr.io/acme)")
    digest = content_hash(spec, files=inputs.files, wheels=wheels)
    repo = repository(registry)
    readable, content = f"{repo}:{spec.readable_tag}", f"{repo}:{spec.readable_tag}-{digest}"
    args = _build_args(spec, inputs=inputs, digest=digest)
    where = (existing or {}).get(content)
    if push and where == "local":
        where = None  # present here but not yet in the registry: build (cached) and push
    skip = where is not None and not force
    if skip:
        reason = f"content-hash tag exists ({where}); --force rebuilds"
    else:
        reason = "forced rebuild" if where else "no image with this content hash"
    cmd = _command(
        builder,
        args,
        refs=(readable, content),
        inputs=inputs,
        repo=repo,
        spec=spec,
        registry=registry,
        push=push,
    )
    pushes = _push_commands(builder, (readable, content)) if push and not skip else ()
    return BuildPlan(
        spec, builder, wheels, digest, readable, content, args, cmd, pushes, skip, reason
    )


def describe(plan: BuildPlan) -> str:
    """The dry-run text for one plan: tags, decision, build args, the exact commands."""
    lines = [
        f"variant {plan.spec.key}: {plan.spec.description}",
        f"  tags:      {plan.readable_ref}",
        f"             {plan.content_ref}",
        f"  decision:  {'SKIP' if plan.skip else 'BUILD'} ({plan.reason})",
        "  wheels:    "
        + (", ".join(PurePath(path).name for path, _ in plan.wheels) or "none (download/compile)"),
        "  build args:",
        *(f"    {key}={value}" for key, value in plan.build_args),
        f"  command:   {shlex.join(plan.command)}",
        *(f"  push:      {shlex.join(cmd)}" for cmd in plan.push_commands),
    ]
    return "\n".join(lines)


def _build_args(
    spec: ImageSpec, *, inputs: BuildInputs, digest: str
) -> tuple[tuple[str, str], ...]:
    created = datetime.fromtimestamp(inputs.source_date_epoch, tz=timezone.utc)
    return (
        ("VARIANT", spec.key),
        ("BASE_IMAGE", spec.base_image),
        ("BUILDER_IMAGE", spec.builder_image),
        ("PYTHON_VERSION", spec.python),
        ("CUDA", spec.cuda),
        ("TORCH_PIN", spec.torch_pin),
        ("TORCH_VERSION", spec.torch_version),
        ("TORCH_INDEX_URL", spec.torch_index),
        ("MMCV_VERSION", spec.mmcv),
        ("MMCV_FROM", spec.mmcv_from),
        ("MMCV_INDEX_URL", spec.mmcv_index),
        ("MMDET_VERSION", spec.mmdet),
        ("MMENGINE_VERSION", spec.mmengine),
        ("DETERMINED_VERSION", spec.determined),
        ("EXTRA_PACKAGES", " ".join(spec.extra_packages)),
        ("TORCH_CUDA_ARCH_LIST", spec.torch_cuda_arch_list),
        ("MAX_JOBS", str(spec.max_jobs)),
        ("SOURCE_DATE_EPOCH", str(inputs.source_date_epoch)),
        ("SOURCE_REVISION", inputs.revision),
        ("SOURCE_URL", public_url(inputs.source_url)),
        ("CREATED", created.strftime("%Y-%m-%dT%H:%M:%SZ")),
        ("CONTENT_HASH", digest),
    )


def _command(builder, args, *, refs, inputs, repo, spec, registry, push) -> tuple[str, ...]:
    common = ["--file", f"{CONTEXT}/Dockerfile", "--target", TARGET]
    for key, value in args:
        common += ["--build-arg", f"{key}={value}"]
    for secret_id, src in inputs.secrets:
        common += ["--secret", f"id={secret_id},src={src}"]
    for ref in refs:
        common += ["--tag", ref]
    if builder == BUILDAH:
        local_base = spec.base_image.startswith(f"{LOCAL_REGISTRY}/")
        pull = "--pull=never" if local_base else "--pull=missing"  # digests never change
        # docker format: OCI images have no SHELL, so buildah would run every RUN step with
        # /bin/sh and without the Dockerfile's `-o pipefail` (it warns, then ignores it).
        head = buildah_cmd(
            "bud", "--isolation=chroot", pull, "--timestamp", str(inputs.source_date_epoch),
            "--format=docker",
        )  # fmt: skip
        return (*head, *common, CONTEXT)
    cache = []
    if registry:
        cache_ref = f"{repo}:buildcache-{spec.key}"
        cache = [
            "--cache-from",
            f"type=registry,ref={cache_ref}",
            "--cache-to",
            f"type=registry,ref={cache_ref},mode=max",
        ]
    return ("docker", "buildx", "build", *common, *cache, "--push" if push else "--load", CONTEXT)


def _push_commands(builder: str, refs: tuple[str, str]) -> tuple[tuple[str, ...], ...]:
    if builder == DOCKER:
        return ()  # buildx --push pushes both tags as part of the build
    return tuple(tuple(buildah_cmd("push", ref, f"docker://{ref}")) for ref in refs)
