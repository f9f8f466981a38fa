"""images/matrix.yaml: shape validation, the fields every variant must carry, and derived tags."""

from __future__ import annotations

import re

import pytest
import tomllib
from images_helpers import real_matrix, specs_from

from common import REPO_ROOT as REPO
from errors import ConfigError
from images.matrix import MATRIX_PATH, expand_matrix, load_matrix, select
from images.rules import DIGEST_RE, check_all


def real_specs():
    return expand_matrix(load_matrix(MATRIX_PATH))


def test_real_matrix_has_the_required_variants_and_passes_every_rule():
    specs = {spec.key: spec for spec in real_specs()}
    check_all(list(specs.values()))
    cu121 = specs["cu121"]
    assert (cu121.cuda, cu121.torch, cu121.mmcv, cu121.mmcv_from) == (
        "12.1",
        "2.1.2",
        "2.1.0",
        "prebuilt",
    )
    newer = [s for s in specs.values() if s.cuda == "12.4" and s.mmcv_from == "source"]
    assert newer and all(tuple(map(int, s.torch.split(".")[:2])) > (2, 1) for s in newer)
    assert (
        specs["cpu"].python == "3.11"
    )  # Debian bookworm's python3, matches the cached cp311 wheel


def test_cuda_variants_pin_pulled_base_images_by_digest():
    for spec in real_specs():
        if spec.cuda != "cpu":
            for ref in (spec.base_image, spec.builder_image):
                assert ref.startswith("localhost/") or DIGEST_RE.search(ref), ref
            assert "9.0" in spec.torch_cuda_arch_list.replace("+PTX", "").split()


def test_cu130_is_debian_plus_pypi_cuda_wheels_for_a100_and_h100():
    cu130 = {spec.key: spec for spec in real_specs()}["cu130"]
    assert (cu130.base_image, cu130.builder_image) == ("localhost/debian:bookworm",) * 2
    assert cu130.torch_pin == "torch==2.14.1" and cu130.torch_version == "2.14.1+cu130"
    assert cu130.torch_cuda_arch_list == "8.0 9.0+PTX"


def test_cpu_variant_matches_the_project_pins():
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    cpu = {spec.key: spec for spec in real_specs()}["cpu"]
    for name in ("mmcv", "mmdet", "mmengine", "determined"):
        assert f"{name}=={getattr(cpu, name)}" in pins
    for extra in cpu.extra_packages:
        assert extra in pins, f"{extra} in images/matrix.yaml differs from pyproject.toml"


# pyproject.toml dependencies the containers do not need: the verbs' CLI, and the host-side
# benchmarks' memory sampling. Everything else the trial and staging import must be in the image.
HOST_ONLY = {"invoke", "psutil"}
# Installed in the image through the training stack's own requirements (mmcv/mmengine need them).
FROM_THE_STACK = {"Pillow", "packaging", "matplotlib"}


def test_the_image_carries_every_runtime_dependency_of_the_code_it_runs():
    """The trial imports trial.expconf (jsonschema) and stages s3:// (boto3): a real cluster's
    first trial died on `No module named 'jsonschema'` while the image lacked it."""
    doc = tomllib.loads((REPO / "pyproject.toml").read_text())
    cpu = {spec.key: spec for spec in real_specs()}["cpu"]
    stack = {"mmcv", "mmdet", "mmengine", "determined"}
    in_image = {re.split(r"[=<>\[]", extra)[0] for extra in cpu.extra_packages}
    for requirement in doc["project"]["dependencies"]:
        name = re.split(r"[=<>\[ ]", requirement)[0]
        if name in stack | HOST_ONLY | FROM_THE_STACK:
            continue
        assert name in in_image, f"{name} is a runtime dependency but not in the image"


@pytest.mark.parametrize(
    ("key", "tag"),
    [
        ("cu121", "mmdet3.3.0-mmcv2.1.0-torch2.1.2-cu121-py3.10"),
        ("cu124", "mmdet3.3.0-mmcv2.1.0-torch2.4.1-cu124-py3.10"),
        ("cpu", "mmdet3.3.0-mmcv2.1.0-torch2.13.0-cpu-py3.11"),
    ],
)
def test_readable_tags(key, tag):
    assert select(real_specs(), [key])[0].readable_tag == tag


def test_derived_fields():
    cu121 = select(real_specs(), ["cu121"])[0]
    assert cu121.torch_pin == "torch==2.1.2+cu121"
    assert cu121.python_tag == "cp310"
    assert cu121.mmcv_index == "https://download.openmmlab.com/mmcv/dist/cu121/torch2.1/index.html"


def test_defaults_apply_and_variants_override(tmp_path):
    doc = real_matrix()
    doc["defaults"]["max_jobs"] = 3
    doc["variants"]["cu121"].pop("max_jobs", None)
    specs = {s.key: s for s in specs_from(doc, tmp_path)}
    assert specs["cu121"].max_jobs == 3
    assert specs["cu124"].max_jobs == 8


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["variants"]["cpu"].pop("python"), r"variant 'cpu': missing field 'python'"),
        (lambda d: d["variants"]["cpu"].update(pyton="3.11"), r"unknown field 'pyton'"),
        (lambda d: d["variants"]["cpu"].update(torch="latest"), r"torch 'latest' is not a version"),
        (lambda d: d["variants"]["cpu"].update(cuda="12"), r"cuda '12' must be like 12.1"),
        (lambda d: d["variants"]["cpu"].update(mmcv_from="conda"), r"mmcv_from 'conda' unknown"),
        (lambda d: d["variants"]["cpu"].update(max_jobs=0), r"max_jobs 0 must be a positive"),
        (lambda d: d.update(variants={}), r"needs a non-empty 'variants:' mapping"),
    ],
)
def test_bad_matrix_is_refused_with_the_field_named(tmp_path, mutate, message):
    doc = real_matrix()
    mutate(doc)
    with pytest.raises(ConfigError, match=message):
        specs_from(doc, tmp_path)


def test_unreadable_matrix_names_the_file(tmp_path):
    bad = tmp_path / "matrix.yaml"
    bad.write_text("variants: [unclosed\n")
    with pytest.raises(ConfigError, match=re.escape(str(bad))):
        load_matrix(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_matrix(tmp_path / "missing.yaml")


def test_unknown_variant_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown image variant 'cu999'; choose from: cu121"):
        select(real_specs(), ["cu999"])
