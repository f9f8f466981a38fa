"""images/scripts/compile-mmcv.sh, the one mmcv compile (ci/setup.sh, the image builder, the GPU
check), end to end on a one-unit stand-in for mmcv's sdist: same package name and version, a setup.py
that hard-codes -std=c++17 like mmcv 2.1.0's, one torch extension unit (plus one CUDA kernel when
this venv's torch has CUDA: then nvcc, the C++20 fix and the cuobjdump arch check run for real).
The real 136-unit compile is what ci/setup.sh times (docs/benchmarks.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

from common import REPO_ROOT as REPO
from images import mmcvbuild

SCRIPT = REPO / "images" / "scripts" / "compile-mmcv.sh"
SETUP_PY = """
import os
from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

args = {'cxx': ['-std=c++17']}
sources = ['mmcv/ops/csrc/ext.cpp']
extension = CppExtension
if os.getenv('FORCE_CUDA', '0') == '1':
    extension = CUDAExtension
    sources.append('mmcv/ops/csrc/kernel.cu')
    args['nvcc'] = ['-std=c++17']
setup(name='mmcv', version='2.1.0', packages=['mmcv'],
      ext_modules=[extension('mmcv._ext', sources, extra_compile_args=args)],
      cmdclass={'build_ext': BuildExtension})
"""
EXT_CPP = """
#include <torch/extension.h>
torch::Tensor twice(torch::Tensor x) { return x * 2; }
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("twice", &twice); }
"""
KERNEL_CU = "__global__ void add1(float *x) { x[threadIdx.x] += 1.0f; }\n"


def _sdist(tmp: Path) -> Path:
    root = tmp / "src" / "mmcv-2.1.0"
    (root / "mmcv" / "ops" / "csrc").mkdir(parents=True)
    (root / "setup.py").write_text(SETUP_PY)
    (root / "mmcv" / "__init__.py").write_text("__version__ = '2.1.0'\n")
    (root / "mmcv" / "ops" / "csrc" / "ext.cpp").write_text(EXT_CPP)
    (root / "mmcv" / "ops" / "csrc" / "kernel.cu").write_text(KERNEL_CU)
    sdist = tmp / "mmcv-2.1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(root, arcname="mmcv-2.1.0")
    return sdist


@pytest.mark.slow  # one torch-extension unit: ~1 min on a quiet core (3+ min on a loaded one)
def test_compile_script_builds_a_stripped_wheel_with_the_asked_arches(tmp_path):
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PY": sys.executable,
        "MMCV_VERSION": "2.1.0",
        "MAX_JOBS": "1",
        "MMCV_SDIST": str(_sdist(tmp_path)),
        "TORCH_CUDA_ARCH_LIST": "8.0 9.0+PTX",
    }
    proc = subprocess.run(["bash", str(SCRIPT), str(out)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = out.glob("mmcv-2.1.0-*.whl")
    info = json.loads((out / "build-info.json").read_text())
    assert 0 < info["ext_so_bytes"] < info["ext_so_bytes_unstripped"]  # the -g debug info is gone
    with zipfile.ZipFile(wheel) as zf:
        assert any(n.startswith("mmcv/_ext") and n.endswith(".so") for n in zf.namelist())
    assert not (out / ".work").exists()
    header = Path(torch.__file__).parent / "include" / "ATen" / "ATen.h"
    patched = mmcvbuild.needs_cxx20(header.read_text())
    # the flag on the compile lines (gcc's warnings also name C++20, in quotes)
    assert (" -std=c++20 " in (out / "build.log").read_text()) is patched
    if torch.version.cuda:  # the CUDA path: nvcc ran for sm_80 + sm_90 (+PTX), cudacheck proved it
        assert info["cuda"] == torch.version.cuda and info["arch_list"] == "8.0 9.0+PTX"
        assert "[cudacheck] ok" in proc.stderr and "SASS sm_80 sm_90, PTX sm_90" in proc.stderr
    else:
        assert info["cuda"] == "cpu"


def _tools_dir(tmp_path: Path) -> Path:
    """A PATH holding only the shell tools the script runs before its ninja check: no ninja."""
    tools = tmp_path / "tools"
    tools.mkdir()
    for name in ("bash", "dirname", "nproc", "printf"):
        found = subprocess.run(["bash", "-c", f"type -P {name}"], capture_output=True, text=True)
        if found.stdout.strip():
            (tools / name).symlink_to(found.stdout.strip())
    return tools


def _run_until_ninja_check(
    tmp_path: Path, *, ninja_beside_python: bool
) -> subprocess.CompletedProcess:
    """Run the script with $PY in an unactivated venv's bin/ (with or without a ninja there)."""
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(sys.executable)
    if ninja_beside_python:
        (venv_bin / "ninja").write_text("#!/bin/sh\necho 1.13.2\n")
        (venv_bin / "ninja").chmod(0o755)
    env = {"PATH": str(_tools_dir(tmp_path)), "PY": str(venv_bin / "python"),
           "MMCV_VERSION": "2.1.0", "HOME": str(tmp_path)}  # fmt: skip
    return subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_compile_script_stops_when_no_ninja_would_compile_in_parallel(tmp_path):
    """Without ninja torch compiles one unit at a time (MAX_JOBS ignored): one line, exit 1."""
    proc = _run_until_ninja_check(tmp_path, ninja_beside_python=False)
    assert proc.returncode == 1
    assert f"no ninja on PATH or beside {tmp_path / 'venv' / 'bin' / 'python'}" in proc.stderr


def test_compile_script_finds_the_ninja_beside_an_unactivated_venv_python(tmp_path):
    """The image builder's venv is never activated: its bin/ninja must still be found."""
    proc = _run_until_ninja_check(tmp_path, ninja_beside_python=True)
    assert "no ninja" not in proc.stderr  # it went on past the check (and stops later: no torch
    # is importable with this PATH's tools alone, which this test does not need)
