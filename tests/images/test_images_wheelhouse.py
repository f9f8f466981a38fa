"""Wheelhouse: which wheels fit a variant, `--wheelhouse auto`, and the stat-keyed digest cache."""

from __future__ import annotations

import hashlib

import pytest

from errors import ConfigError
from images import wheelhouse
from images.matrix import MATRIX_PATH, expand_matrix, load_matrix, select

TORCH = "torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl"  # PyPI's (a cu130 build)
MMCV = "mmcv-2.1.0-cp311-cp311-linux_x86_64.whl"


def spec(key="cpu"):
    return select(expand_matrix(load_matrix(MATRIX_PATH)), [key])[0]


@pytest.mark.parametrize(
    ("names", "chosen"),
    [
        ([TORCH, MMCV], [TORCH, MMCV]),
        ([MMCV], [MMCV]),
        (["torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl", MMCV], [MMCV]),  # CPU index
        (["torch-2.13.0-cp310-cp310-manylinux_2_28_x86_64.whl"], []),  # other Python
        (["mmcv-2.2.0-cp311-cp311-linux_x86_64.whl", "numpy-2.4.0-cp311-cp311-x.whl"], []),
        ([], []),
    ],
)
def test_select_wheels(names, chosen):
    assert wheelhouse.select_wheels(spec(), names) == chosen


def test_auto_finds_setup_cache_and_find_links(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    key_dir = cache / "wheels" / "mmcv2.1.0-torch2.13.0-cp311-cu130-cpuops"  # ci/setup.sh's key
    key_dir.mkdir(parents=True)
    (key_dir / MMCV).write_bytes(b"mmcv")
    links = tmp_path / "links"
    links.mkdir()
    (links / TORCH).write_bytes(b"torch")
    monkeypatch.setenv("MMDET_DET_CACHE", str(cache))
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    found = wheelhouse.find_wheels(spec(), "auto")
    assert [p.name for p in found] == [TORCH, MMCV]
    assert wheelhouse.find_wheels(spec("cu121"), "auto") == ()
    assert wheelhouse.find_wheels(spec(), None) == ()


def test_explicit_dir_and_missing_dir(tmp_path):
    (tmp_path / MMCV).write_bytes(b"x")
    assert [p.name for p in wheelhouse.find_wheels(spec(), str(tmp_path))] == [MMCV]
    with pytest.raises(ConfigError, match=r"--wheelhouse .*nope: not a directory"):
        wheelhouse.find_wheels(spec(), str(tmp_path / "nope"))


def test_digests_are_real_and_cached_by_stat(tmp_path, monkeypatch):
    monkeypatch.setenv("MMDET_DET_CACHE", str(tmp_path / "cache"))
    wheel = tmp_path / MMCV
    wheel.write_bytes(b"first")
    (got,) = wheelhouse.wheel_digests((wheel,))
    assert got == (str(wheel), hashlib.sha256(b"first").hexdigest())
    assert (tmp_path / "cache" / "wheel-digests.json").exists()
    calls = []
    monkeypatch.setattr(wheelhouse, "file_sha256", lambda p: calls.append(p) or "x")
    assert wheelhouse.wheel_digests((wheel,)) == (got,)  # served from the cache
    assert calls == []
    wheel.write_bytes(b"second, longer")  # new size -> new key -> hashed again
    wheelhouse.wheel_digests((wheel,))
    assert calls == [wheel]
    assert not list((tmp_path / "cache").glob("*.incomplete"))


CU130_TORCH = "torch-2.14.1-cp311-cp311-manylinux_2_28_x86_64.whl"  # PyPI's name: no +cu130


@pytest.mark.parametrize(
    ("names", "chosen"),
    [
        ([CU130_TORCH, MMCV], [CU130_TORCH, MMCV]),
        (
            ["torch-2.14.1+cu130-cp311-cp311-manylinux_2_28_x86_64.whl"],
            ["torch-2.14.1+cu130-cp311-cp311-manylinux_2_28_x86_64.whl"],
        ),
        (["torch-2.14.1+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"], []),
        (["torch-2.14.1-cp312-cp312-manylinux_2_28_x86_64.whl"], []),
    ],
)
def test_select_wheels_for_a_pypi_torch_variant(names, chosen):
    assert wheelhouse.select_wheels(spec("cu130"), names) == chosen


def test_auto_for_cu130_takes_the_cuda_key_and_torchs_closure(tmp_path, monkeypatch):
    monkeypatch.setenv("MMDET_DET_CACHE", str(tmp_path))
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    cu130 = spec("cu130")
    key_dir = tmp_path / "wheels" / "mmcv2.1.0-torch2.14.1-cp311-cu130-sm80.sm90+ptx"
    key_dir.mkdir(parents=True)
    (key_dir / MMCV).write_bytes(b"cuda mmcv")
    cpu_dir = tmp_path / "wheels" / "mmcv2.1.0-torch2.13.0-cp311-cpu"  # never for a CUDA variant
    cpu_dir.mkdir()
    (cpu_dir / "mmcv-2.1.0-cp311-cp311-other.whl").write_bytes(b"cpu mmcv")
    closure = wheelhouse.torch_dir(cu130)
    closure.mkdir(parents=True)
    for name in (CU130_TORCH, "nvidia_nccl_cu13-2.30.7-py3-none-manylinux_2_18_x86_64.whl"):
        (closure / name).write_bytes(b"w")
    found = [p.name for p in wheelhouse.find_wheels(cu130, "auto")]
    assert found == [
        CU130_TORCH,
        MMCV,
        "nvidia_nccl_cu13-2.30.7-py3-none-manylinux_2_18_x86_64.whl",
    ]
    assert wheelhouse.fetch_torch_wheels(cu130, echo=print) == closure  # present: nothing fetched
