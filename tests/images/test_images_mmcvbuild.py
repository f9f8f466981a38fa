"""How mmcv is compiled (images/mmcvbuild.py): the wheel cache key and the C++20 fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from images import mmcvbuild

# torch 2.14's ATen/ATen.h opens with this guard (torch 2.13's says 201703L / C++17).
ATEN_214 = (
    "#pragma once\n\n#if !defined(_MSC_VER) && __cplusplus < 202002L\n"
    "#error C++20 or later compatible compiler is required to use ATen.\n#endif\n"
)
# mmcv 2.1.0's setup.py, the lines that pick the standard (get_extensions, non-Windows).
MMCV_SETUP = """
            else:
                extra_compile_args['cxx'] = ['-std=c++17']
        if 'nvcc' in extra_compile_args and platform.system() != 'Windows':
            else:
                extra_compile_args['nvcc'] += ['-std=c++17']
"""


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        # The CPU key never changes: the lead's cached CPU wheel must keep being found.
        (dict(torch="2.13.0+cpu", cuda="cpu"), "mmcv2.1.0-torch2.13.0-cp311-cpu"),
        (dict(torch="2.13.0", cuda="cpu", arch_list="9.0"), "mmcv2.1.0-torch2.13.0-cp311-cpu"),
        (
            dict(torch="2.14.1+cu130", cuda="13.0", arch_list="8.0 9.0+PTX"),
            "mmcv2.1.0-torch2.14.1-cp311-cu130-sm80.sm90+ptx",
        ),
        (
            dict(torch="2.14.1", cuda="13.0", arch_list="9.0+PTX;8.0"),
            "mmcv2.1.0-torch2.14.1-cp311-cu130-sm80.sm90+ptx",
        ),
        (
            dict(torch="2.11.0", cuda="13.0", arch_list="9.0"),
            "mmcv2.1.0-torch2.11.0-cp311-cu130-sm90",
        ),
        (
            dict(torch="2.4.1", cuda="12.4", arch_list="9.0a 10.0"),
            "mmcv2.1.0-torch2.4.1-cp311-cu124-sm90a.sm100",
        ),
    ],
)
def test_cache_key(kwargs, key):
    assert mmcvbuild.cache_key(mmcv="2.1.0", python_tag="cp311", **kwargs) == key


def test_cache_key_separates_arch_lists():
    keys = {
        mmcvbuild.cache_key(
            mmcv="2.1.0", torch="2.14.1", python_tag="cp311", cuda="13.0", arch_list=a
        )
        for a in ("9.0", "9.0+PTX", "8.0 9.0", "8.0 9.0+PTX")
    }
    assert len(keys) == 4


def test_a_cuda_torch_without_an_arch_list_keys_a_cpu_ops_wheel():
    """PyPI's CUDA torch on a CPU machine: CPU ops, never mistaken for a CPU torch's or a CUDA wheel."""
    key = mmcvbuild.cache_key(mmcv="2.1.0", torch="2.13.0", python_tag="cp311", cuda="13.0")
    assert key == "mmcv2.1.0-torch2.13.0-cp311-cu130-cpuops"
    assert key != mmcvbuild.cache_key(mmcv="2.1.0", torch="2.13.0", python_tag="cp311", cuda="cpu")
    with pytest.raises(ValueError, match="is not like"):
        mmcvbuild.arch_key("sm90")


def test_needs_cxx20_reads_torchs_own_header():
    header = Path(torch.__file__).parent / "include" / "ATen" / "ATen.h"
    text = header.read_text()
    wants_20 = "202002L" in text
    assert mmcvbuild.needs_cxx20(text) is wants_20  # this venv's torch, whatever it is
    assert mmcvbuild.needs_cxx20(ATEN_214)
    assert not mmcvbuild.needs_cxx20(
        ATEN_214.replace("202002L", "201703L").replace("C++20", "C++17")
    )


def test_patch_cxx_std_changes_both_compilers(tmp_path):
    setup_py = tmp_path / "setup.py"
    setup_py.write_text(MMCV_SETUP)
    assert mmcvbuild.main(["patch-std", str(setup_py)]) == 0
    text = setup_py.read_text()
    assert "c++17" not in text and text.count("'-std=c++20'") == 2
    assert mmcvbuild.main(["patch-std", str(setup_py)]) == 0  # a second run changes nothing
    assert setup_py.read_text() == text


def test_patch_cxx_std_refuses_an_unknown_setup_py(tmp_path):
    setup_py = tmp_path / "setup.py"
    setup_py.write_text("extra_compile_args = {'cxx': ['-std=gnu++17']}\n")
    assert mmcvbuild.main(["patch-std", str(setup_py)]) == 2
    with pytest.raises(ValueError, match="needs a different fix"):
        mmcvbuild.patch_cxx_std(setup_py.read_text())
