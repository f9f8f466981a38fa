"""Compatibility rules: incompatible matrices are refused before any build, with the rule named."""

from __future__ import annotations

import pytest
from images_helpers import variant_with

from errors import BuildError
from images.rules import check_spec, parse_arch_list


@pytest.mark.parametrize(
    ("key", "changes", "rule", "detail"),
    [
        # The three: mmdet 3.3 with mmcv 2.2, a prebuilt torch without wheels, a bad arch.
        ("cu121", {"mmcv": "2.2.0"}, "mmdet-mmcv", r"mmdet 3.3.0 needs mmcv>=2.0.0rc4,<2.2.0"),
        (
            "cu124",
            {"mmcv_from": "prebuilt"},
            "mmcv-prebuilt",
            r"no prebuilt mmcv 2.1.0 wheel for "
            r"torch 2.4.1 \+ cu124",
        ),
        (
            "cu121",
            {"torch_cuda_arch_list": "8.0 9.0 10.0"},
            "arch-cuda",
            r"CUDA 12.1 cannot compile arch 10.0 \(needs CUDA>=12.8\)",
        ),
        # The rest of the table.
        ("cu121", {"mmdet": "3.1.0"}, "mmdet-mmcv", r"mmdet 3.1.0 needs mmcv>=2.0.0rc4,<2.1.0"),
        ("cu121", {"mmdet": "2.28.2"}, "mmdet-mmcv", r"mmdet 2.28.2 is not in the table"),
        ("cu121", {"mmengine": "1.0.0"}, "mmdet-mmengine", r"needs mmengine>=0.7.1,<1.0.0"),
        (
            "cu121",
            {
                "torch": "2.1.2",
                "cuda": "12.4",
                "torch_index": "https://download.pytorch.org/whl/cu124",
            },
            "torch-cuda",
            r"torch 2.1.2 has CUDA builds for 11.8, 12.1, not CUDA 12.4",
        ),
        (
            "cu121",
            {"torch_index": "https://download.pytorch.org/whl/cu118"},
            "torch-index",
            r"must end in /cu121",
        ),
        ("cu121", {"python": "3.12"}, "mmcv-prebuilt", r"no Python 3.12"),
        ("cu124", {"torch_cuda_arch_list": "8.0 8.6"}, "arch-h100", r"add 9.0"),
        ("cu124", {"torch_cuda_arch_list": ""}, "arch-cuda", r"torch_cuda_arch_list is empty"),
        ("cu124", {"torch_cuda_arch_list": "Hopper"}, "arch-cuda", r"unknown CUDA arch 'Hopper'"),
        ("cu124", {"torch_cuda_arch_list": "3.7 9.0"}, "arch-cuda", r"cannot compile arch 3.7"),
        ("cpu", {"torch_cuda_arch_list": "8.0"}, "arch-cuda", r"a cpu variant compiles no CUDA"),
        (
            "cu124",
            {"base_image": "nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04"},
            "base-digest",
            r"base_image nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 is not pinned",
        ),
        (
            "cu124",
            {"builder_image": "nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04@sha256:" + "0" * 64},
            "builder-nvcc",
            r"has no nvcc",
        ),
    ],
)
def test_incompatible_variant_is_refused_naming_rule_and_variant(
    tmp_path, key, changes, rule, detail
):
    spec = variant_with(tmp_path, key, **changes)
    with pytest.raises(BuildError) as err:
        check_spec(spec)
    message = str(err.value)
    assert message.startswith(f"compatibility rule '{rule}' failed for variant '{key}': ")
    assert "\n" not in message
    assert __import__("re").search(detail, message), message


def test_cuda_12_8_may_compile_blackwell(tmp_path):
    spec = variant_with(
        tmp_path,
        "cu124",
        cuda="12.8",
        torch="2.7.1",
        torch_index="https://download.pytorch.org/whl/cu128",
        torch_cuda_arch_list="8.0 9.0 10.0 12.0+PTX",
    )
    check_spec(spec)


def test_arch_list_parsing():
    assert parse_arch_list("7.0 8.6;9.0+PTX") == ["7.0", "8.6", "9.0"]
    assert parse_arch_list("  ") == []


@pytest.mark.parametrize(
    ("changes", "rule", "detail"),
    [
        (
            {"torch": "2.9.1"},
            "torch-index",
            r"PyPI's torch 2.9.1 is not a CUDA 13.0 build \(12.8\)",
        ),
        ({"torch_cuda_arch_list": "7.0 9.0"}, "arch-cuda", r"CUDA 13.0 cannot compile arch 7.0"),
        ({"torch_cuda_arch_list": "8.0"}, "arch-h100", r"add 9.0"),
        (
            {
                "cuda": "12.8",
                "torch": "2.9.1",
                "torch_index": "https://download.pytorch.org/whl/cu128",
            },
            "builder-nvcc",
            r"no known nvcc wheel for CUDA 12.8",
        ),
        ({"base_image": "docker.io/library/debian:bookworm"}, "base-digest", r"is not pinned"),
    ],
)
def test_cu130_rules(tmp_path, changes, rule, detail):
    with pytest.raises(BuildError, match=rf"rule '{rule}' failed for variant 'cu130': .*{detail}"):
        check_spec(variant_with(tmp_path, "cu130", **changes))


def test_cu130_is_fine_and_needs_driver_580(tmp_path):
    from images.rules import min_driver

    check_spec(variant_with(tmp_path, "cu130"))  # a localhost/ base needs no digest
    check_spec(
        variant_with(tmp_path, "cu130", torch_cuda_arch_list="7.5 8.0 8.6 9.0 10.0 12.0+PTX")
    )
    assert (min_driver("13.0"), min_driver("12.4"), min_driver("cpu")) == ("580", "525.60.13", "–")
