"""Build plans: tags, content hash, build args, builder argv, skip decisions, --dry-run output."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from images_helpers import real_matrix, specs_from

from errors import ConfigError
from images import build, buildah
from images.build import BuildRequest, build_images
from images.matrix import MATRIX_PATH, expand_matrix, load_matrix, select
from images.plan import BuildInputs, content_hash, plan_build, public_url, with_base_image

FILES = {"Dockerfile": "a" * 64, "scripts/install-runtime.sh": "b" * 64}
INPUTS = BuildInputs(
    files=FILES,
    revision="deadbeef",
    source_date_epoch=1700000000,
    secrets=(("ca_bundle", "/etc/ssl/certs/ca-certificates.crt"),),
)
WHEELS = (
    ("/w/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl", "1" * 64),
    ("/w/mmcv-2.1.0-cp311-cp311-linux_x86_64.whl", "2" * 64),
)


def spec(key="cpu"):
    return select(expand_matrix(load_matrix(MATRIX_PATH)), [key])[0]


def test_tags_are_readable_plus_content_hash():
    plan = plan_build(spec(), inputs=INPUTS, wheels=WHEELS)
    readable = "localhost/mmdet-determined:mmdet3.3.0-mmcv2.1.0-torch2.13.0-cpu-py3.11"
    assert plan.readable_ref == readable
    assert re.fullmatch(re.escape(readable) + r"-[0-9a-f]{12}", plan.content_ref)
    assert plan.content_ref.endswith(plan.content_hash)
    pushed = plan_build(spec(), inputs=INPUTS, registry="ghcr.io/acme/", push=True)
    assert pushed.readable_ref.startswith("ghcr.io/acme/mmdet-determined:mmdet3.3.0")


def test_build_args_carry_the_variant():
    args = dict(plan_build(spec("cu124"), inputs=INPUTS).build_args)
    assert args["TORCH_PIN"] == "torch==2.4.1+cu124"
    assert args["MMCV_FROM"] == "source"
    assert args["TORCH_CUDA_ARCH_LIST"] == "7.0 7.5 8.0 8.6 8.9 9.0+PTX"
    assert args["MAX_JOBS"] == "8"
    assert args["CUDA"] == "12.4"
    assert args["SOURCE_DATE_EPOCH"] == "1700000000"
    assert args["CREATED"] == "2023-11-14T22:13:20Z"
    assert args["SOURCE_REVISION"] == "deadbeef"
    assert args["BASE_IMAGE"].startswith("docker.io/nvidia/cuda:12.4.1-cudnn-runtime")
    assert args["BUILDER_IMAGE"].startswith("docker.io/nvidia/cuda:12.4.1-cudnn-devel")


@pytest.mark.parametrize(
    "change",
    [
        lambda s, f, w: (replace(s, mmdet="3.2.0"), f, w),
        lambda s, f, w: (s, {**f, "Dockerfile": "c" * 64}, w),
        lambda s, f, w: (s, {**f, "scripts/new.sh": "d" * 64}, w),
        lambda s, f, w: (s, f, (w[0], (w[1][0], "3" * 64))),
        lambda s, f, w: (s, f, w[:1]),
        lambda s, f, w: (with_base_image(s, "localhost/debian:trixie"), f, w),
    ],
)
def test_content_hash_changes_with_everything_that_shapes_the_image(change):
    before = content_hash(spec(), files=FILES, wheels=WHEELS)
    s, f, w = change(spec(), FILES, WHEELS)
    assert content_hash(s, files=f, wheels=w) != before


def test_content_hash_ignores_the_description():
    before = content_hash(spec(), files=FILES, wheels=WHEELS)
    assert content_hash(replace(spec(), description="x"), files=FILES, wheels=WHEELS) == before


def test_content_hash_ignores_revision_and_wheel_location():
    other = BuildInputs(files=FILES, revision="cafe", source_date_epoch=1)
    moved = tuple((p.replace("/w/", "/elsewhere/"), d) for p, d in WHEELS)
    a = plan_build(spec(), inputs=INPUTS, wheels=WHEELS).content_hash
    assert plan_build(spec(), inputs=other, wheels=moved).content_hash == a


def test_skip_decision():
    fresh = plan_build(spec(), inputs=INPUTS)
    assert not fresh.skip and fresh.reason == "no image with this content hash"
    local = plan_build(spec(), inputs=INPUTS, existing={fresh.content_ref: "local"})
    assert local.skip and "exists (local)" in local.reason
    forced = plan_build(spec(), inputs=INPUTS, existing={fresh.content_ref: "local"}, force=True)
    assert not forced.skip and forced.reason == "forced rebuild"
    other_tag = plan_build(spec(), inputs=INPUTS, existing={fresh.readable_ref: "local"})
    assert not other_tag.skip  # the readable tag alone says nothing about the content
    registry = plan_build(
        spec(),
        inputs=INPUTS,
        registry="r.io/x",
        push=True,
        existing={"r.io/x/mmdet-determined:" + fresh.content_ref.split(":")[1]: "registry"},
    )
    assert registry.skip and registry.push_commands == ()


def test_push_of_an_image_present_only_locally_still_pushes():
    draft = plan_build(spec(), inputs=INPUTS, registry="r.io/x", push=True)
    plan = plan_build(
        spec(), inputs=INPUTS, registry="r.io/x", push=True, existing={draft.content_ref: "local"}
    )
    assert not plan.skip
    assert [cmd[-1] for cmd in plan.push_commands] == [f"docker://{r}" for r in plan.refs]


def test_buildah_command():
    cmd = plan_build(spec(), inputs=INPUTS).command
    assert cmd[:5] == (
        "buildah",
        *buildah.storage_opts(),
        "bud",
        "--isolation=chroot",
        "--pull=never",
    )
    assert cmd[5:8] == ("--timestamp", "1700000000", "--format=docker")  # keeps SHELL pipefail
    assert "--build-arg" in cmd and "TORCH_PIN=torch==2.13.0" in cmd  # PyPI's build
    assert "id=ca_bundle,src=/etc/ssl/certs/ca-certificates.crt" in cmd
    assert cmd[-1] == "CONTEXT"
    assert "--pull=missing" in plan_build(spec("cu121"), inputs=INPUTS).command


def test_docker_command_uses_buildx_with_a_registry_cache():
    cmd = plan_build(
        spec("cu121"), inputs=INPUTS, builder="docker", registry="ghcr.io/acme", push=True
    ).command
    assert cmd[:3] == ("docker", "buildx", "build")
    cache = "ghcr.io/acme/mmdet-determined:buildcache-cu121"
    assert ("--cache-from", f"type=registry,ref={cache}") == cmd[cmd.index("--cache-from") :][:2]
    assert f"type=registry,ref={cache},mode=max" in cmd
    assert "--push" in cmd
    local = plan_build(spec("cu121"), inputs=INPUTS, builder="docker").command
    assert "--load" in local and "--cache-from" not in local


def test_bad_options_are_refused():
    with pytest.raises(ConfigError, match="--push needs --registry"):
        plan_build(spec(), inputs=INPUTS, push=True)
    with pytest.raises(ConfigError, match="--builder 'podman' unknown"):
        plan_build(spec(), inputs=INPUTS, builder="podman")
    with pytest.raises(ConfigError, match="--variant and --all exclude each other"):
        build_images(BuildRequest(variants=("cpu",), all=True, dry_run=True))
    with pytest.raises(ConfigError, match=r"no variant named: pass --variant V \(repeatable"):
        build_images(BuildRequest(dry_run=True))


def test_dry_run_all_prints_a_plan_per_variant_and_builds_nothing(monkeypatch):
    lines: list[str] = []
    ran: list = []
    monkeypatch.setattr(build, "_run", lambda argv, what: ran.append(argv))
    plans = build_images(BuildRequest(all=True, dry_run=True, builder="buildah"), echo=lines.append)
    text = "\n".join(lines)
    assert [p.spec.key for p in plans] == ["cu121", "cu124", "cu130", "cpu"]
    for plan in plans:
        assert f"variant {plan.spec.key}:" in text
        assert plan.readable_ref in text and plan.content_ref in text
        assert f"--build-arg VARIANT={plan.spec.key}" in text
    assert text.count("decision:  BUILD") + text.count("decision:  SKIP") == 4
    assert f"buildah {' '.join(buildah.storage_opts())} bud" in text
    assert ran == []


def test_dry_run_shows_skip_when_the_content_tag_exists(monkeypatch):
    monkeypatch.setattr(build, "_exists_locally", lambda ref, builder: True)
    lines: list[str] = []
    plans = build_images(BuildRequest(variants=("cpu",), dry_run=True), echo=lines.append)
    assert plans[0].skip
    assert "decision:  SKIP (content-hash tag exists (local); --force rebuilds)" in "\n".join(lines)


def test_docker_dry_run_works_without_docker_installed():
    lines: list[str] = []
    build_images(
        BuildRequest(all=True, dry_run=True, builder="docker", registry="ghcr.io/acme", push=True),
        echo=lines.append,
    )
    assert "\n".join(lines).count("docker buildx build") == 4


def test_incompatible_matrix_stops_before_planning(tmp_path, monkeypatch):
    doc = real_matrix()
    doc["variants"]["cu121"]["mmcv"] = "2.2.0"
    path = tmp_path / "matrix.yaml"
    specs_from(doc, tmp_path)  # writes path
    monkeypatch.setattr(build, "MATRIX_PATH", path)
    monkeypatch.setattr(build, "gather_inputs", lambda **_: pytest.fail("planned anyway"))
    with pytest.raises(Exception, match="rule 'mmdet-mmcv' failed for variant 'cu121'"):
        build_images(BuildRequest(all=True, dry_run=True))


def test_base_image_override():
    cpu = with_base_image(spec(), "localhost/debian:trixie")
    assert (cpu.base_image, cpu.builder_image) == ("localhost/debian:trixie",) * 2
    cu = with_base_image(spec("cu124"), "mirror.io/cuda@sha256:" + "f" * 64)
    assert cu.base_image.startswith("mirror.io") and "devel" in cu.builder_image


@pytest.mark.parametrize(
    ("url", "label"),
    [
        ("https://oauth2:ghp_s3cret@github.com/acme/repo.git", "https://github.com/acme/repo.git"),
        ("https://github.com/acme/repo.git", "https://github.com/acme/repo.git"),
        ("git@github.com:acme/repo.git", "git@github.com:acme/repo.git"),
        ("unknown", "unknown"),
    ],
)
def test_source_url_label_never_carries_credentials(url, label):
    assert public_url(url) == label
    inputs = BuildInputs(files=FILES, source_url=url)
    assert dict(plan_build(spec(), inputs=inputs).build_args)["SOURCE_URL"] == label
