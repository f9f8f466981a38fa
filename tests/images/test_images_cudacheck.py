"""The arch proof (images/cudacheck.py) on real device code: tiny .so files compiled here with nvcc
for one arch (seconds), and on ci/setup.sh's CUDA mmcv wheel when this machine has built it."""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from common import cache_root
from images import cudacheck, mmcvbuild

KERNEL = "__global__ void add1(float *x) { x[threadIdx.x] += 1.0f; }\n"
CUDA_WHEEL_ARCHES = "8.0 9.0+PTX"


def _nvcc() -> str:
    for home in (os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"):
        if home and os.access(os.path.join(home, "bin", "nvcc"), os.X_OK):
            return os.path.join(home, "bin", "nvcc")
    pytest.skip("needs nvcc: set CUDA_HOME or pip install 'cuda-toolkit[nvcc,cccl]==13.0.3.0'")


@pytest.fixture(scope="module")
def tool() -> str:
    try:
        return cudacheck.find_cuobjdump()
    except cudacheck.ArchCheckError as err:
        pytest.fail(f"{err} (the dev extras install it: bash ci/setup.sh)")


@pytest.fixture(scope="module")
def sm90(tmp_path_factory) -> dict[str, Path]:
    """Two shared objects for sm_90: SASS only, and SASS + compute_90 PTX (one nvcc call each)."""
    tmp = tmp_path_factory.mktemp("tiny-so")
    (tmp / "k.cu").write_text(KERNEL)
    gencodes = {
        "sass": ["-gencode", "arch=compute_90,code=sm_90"],
        "sass+ptx": ["-gencode", "arch=compute_90,code=[sm_90,compute_90]"],
    }
    out = {}
    for name, flags in gencodes.items():
        so = tmp / f"{name}.so"
        argv = [_nvcc(), "-shared", "-Xcompiler", "-fPIC", *flags, "-o", str(so), str(tmp / "k.cu")]
        subprocess.run(argv, check=True, capture_output=True)
        out[name] = so
    return out


@pytest.mark.parametrize(
    ("arch_list", "sass", "ptx"),
    [
        ("8.0 9.0+PTX", ("80", "90"), ("90",)),
        ("9.0;8.0", ("90", "80"), ()),
        ("9.0a", ("90a",), ()),
        ("  8.6  ", ("86",), ()),
    ],
)
def test_wanted(arch_list, sass, ptx):
    assert cudacheck.wanted(arch_list) == cudacheck.Wanted(sass, ptx)


@pytest.mark.parametrize("bad", ["", "sm_90", "9", "9.0+ptx"])
def test_wanted_rejects_bad_lists(bad):
    with pytest.raises(ValueError, match=r"arch list is empty|not like 8\.0"):
        cudacheck.wanted(bad)


def test_the_arch_that_was_compiled_passes(sm90, tool):
    report = cudacheck.check_extension(sm90["sass+ptx"], "9.0+PTX", cuobjdump=tool)
    assert report.ok, report.summary()
    assert report.sass == ("90",) and report.ptx == ("90",)


def test_a_missing_arch_fails_and_is_named(sm90, tool):
    report = cudacheck.check_extension(sm90["sass+ptx"], "8.0 9.0+PTX", cuobjdump=tool)
    assert not report.ok
    assert report.missing_sass == ("80",) and report.missing_ptx == ()
    assert "MISSING SASS sm_80" in report.summary()


def test_ptx_asked_but_only_sass_built_fails(sm90, tool):
    assert cudacheck.check_extension(sm90["sass"], "9.0", cuobjdump=tool).ok
    report = cudacheck.check_extension(sm90["sass"], "9.0+PTX", cuobjdump=tool)
    assert report.missing_ptx == ("90",) and not report.missing_sass


def test_host_only_library_has_no_arches(tool):
    report = cudacheck.check_extension(Path(shutil.which("ls")), "9.0", cuobjdump=tool)
    assert report.sass == () and report.missing_sass == ("90",)


def test_cli_exit_codes_and_wheel_input(sm90, tool, tmp_path, capsys):
    wheel = tmp_path / "mmcv-2.1.0-cp311-cp311-linux_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(sm90["sass+ptx"], "mmcv/_ext.cpython-311-x86_64-linux-gnu.so")
    assert cudacheck.main([str(wheel), "--arch-list", "9.0+PTX", "--cuobjdump", tool]) == 0
    assert cudacheck.main([str(wheel), "--arch-list", "8.0 9.0", "--cuobjdump", tool]) == 1
    out = capsys.readouterr().out
    assert "[cudacheck] ok" in out and "[cudacheck] FAIL" in out and "MISSING SASS sm_80" in out
    site = tmp_path / "venv" / "lib" / "site-packages" / "mmcv"
    site.mkdir(parents=True)
    shutil.copy(sm90["sass"], site / "_ext.cpython-311-x86_64-linux-gnu.so")
    assert cudacheck.main([str(tmp_path / "venv"), "--arch-list", "9.0", "--cuobjdump", tool]) == 0
    assert (
        cudacheck.main([str(tmp_path / "nothing"), "--arch-list", "9.0", "--cuobjdump", tool]) == 2
    )


def test_setups_cuda_wheel_has_every_arch(tool):
    """ci/setup.sh's real CUDA mmcv wheel (TORCH_SPEC=torch==2.14.1) when this machine built it."""
    key = mmcvbuild.cache_key(
        mmcv="2.1.0", torch="2.14.1", python_tag="cp311", cuda="13.0", arch_list=CUDA_WHEEL_ARCHES
    )
    wheels = sorted((cache_root() / "wheels" / key).glob("mmcv-2.1.0-*.whl"))
    if not wheels:
        pytest.skip(
            f"no CUDA mmcv wheel under {cache_root() / 'wheels' / key}: "
            "VENV=.venv-cuda TORCH_SPEC=torch==2.14.1 bash ci/setup.sh builds it"
        )
    report = cudacheck.check_extension(wheels[0], CUDA_WHEEL_ARCHES, cuobjdump=tool)
    assert report.ok, report.summary()
