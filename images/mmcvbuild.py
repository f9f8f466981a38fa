"""How mmcv 2.1.0 is compiled here: the wheel cache key and the C++-standard fix (stdlib only).

ci/setup.sh, the image's builder stage and ci/gpu-check.sh all call this module (``python -m
images.mmcvbuild …``) so the three compile mmcv the same way:

- ``key``: the directory the built wheel is cached under. CPU wheels keep the original
  ``mmcv2.1.0-torch2.13.0-cp311-cpu``; CUDA wheels add the CUDA version and the arch list
  (``…-cu130-sm80.sm90+ptx``), since a wheel for 9.0 alone must never stand in for 8.0+9.0.
- ``needs-cxx20`` / ``patch-std``: mmcv 2.1.0's setup.py hard-codes ``-std=c++17`` for the C++
  compiler and for nvcc, while torch >= 2.14's headers refuse anything below C++20 (``ATen.h:
  #error C++20 or later compatible compiler is required``). ``MMCV_CUDA_ARGS`` cannot override it
  (nvcc refuses two ``-std`` flags), so setup.py itself is edited, and only where torch's own
  headers ask for it. Upstream fixed this in open-mmlab/mmcv#3341 (unreleased for 2.1.0).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

CXX17 = "'-std=c++17'"
CXX20 = "'-std=c++20'"
# torch's ATen/ATen.h guard, e.g. `#if !defined(_MSC_VER) && __cplusplus < 202002L` + `#error C++20 …`
CXX20_GUARD = re.compile(r"__cplusplus\s*<\s*202002L|C\+\+20 or later")
ARCH_RE = re.compile(r"^(\d+)\.(\d+)([a-z]?)(\+PTX)?$")
# NVIDIA's nvcc on PyPI per CUDA version (nvcc, cicc, crt headers, CCCL into site-packages/nvidia/cuXX):
# what a builder without a CUDA toolkit installs. Only versions compiled with here are listed.
NVCC_WHEELS = {"13.0": "cuda-toolkit[nvcc,cccl]==13.0.3.0"}


def arch_tokens(arch_list: str) -> list[str]:
    """``"8.0 9.0+PTX"`` or ``"8.0;9.0+PTX"`` -> ``["8.0", "9.0+PTX"]``; raises on a bad entry."""
    tokens = [t for t in re.split(r"[;\s]+", arch_list.strip()) if t]
    for token in tokens:
        if not ARCH_RE.match(token):
            raise ValueError(
                f"TORCH_CUDA_ARCH_LIST entry {token!r} is not like 8.0, 9.0a or 9.0+PTX"
            )
    return tokens


def arch_key(arch_list: str) -> str:
    """The arch list as a cache-key part: ``"9.0+PTX;8.0"`` -> ``"sm80.sm90+ptx"`` (sorted)."""
    parts = []
    for token in arch_tokens(arch_list):
        major, minor, suffix, ptx = ARCH_RE.match(token).groups()
        parts.append(
            (int(major), int(minor), f"sm{major}{minor}{suffix}" + ("+ptx" if ptx else ""))
        )
    if not parts:
        raise ValueError("TORCH_CUDA_ARCH_LIST is empty; set it, e.g. '8.0 9.0+PTX'")
    return ".".join(name for *_, name in sorted(set(parts)))


def cache_key(*, mmcv: str, torch: str, python_tag: str, cuda: str, arch_list: str = "") -> str:
    """``mmcv2.1.0-torch2.13.0-cp311-cpu`` (CPU torch), ``…-cu130-cpuops`` (CUDA torch, no arch
    list: CPU ops only) or ``mmcv2.1.0-torch2.14.1-cp311-cu130-sm80.sm90+ptx`` (CUDA ops).

    ``torch`` drops its local label (``2.14.1+cu130`` -> ``2.14.1``); ``cuda`` is ``cpu`` or a
    version like ``13.0``.
    """
    torch = torch.split("+")[0]
    if cuda == "cpu":
        return f"mmcv{mmcv}-torch{torch}-{python_tag}-cpu"
    cuda_tag = "cu" + cuda.replace(".", "")
    if not arch_list.strip():  # a CUDA torch on a CPU machine: CPU ops only (compile-mmcv.sh)
        return f"mmcv{mmcv}-torch{torch}-{python_tag}-{cuda_tag}-cpuops"
    return f"mmcv{mmcv}-torch{torch}-{python_tag}-{cuda_tag}-{arch_key(arch_list)}"


def needs_cxx20(aten_header: str) -> bool:
    """True when torch's ATen/ATen.h refuses to compile below C++20."""
    return bool(CXX20_GUARD.search(aten_header))


def patch_cxx_std(setup_py: str) -> str:
    """mmcv's setup.py with every ``'-std=c++17'`` turned into ``'-std=c++20'``.

    Raises ValueError when there is nothing to replace (a different mmcv: check by hand).
    """
    if CXX17 not in setup_py:
        if CXX20 in setup_py:
            return setup_py
        raise ValueError(f"mmcv's setup.py has no {CXX17}; this mmcv needs a different fix")
    return setup_py.replace(CXX17, CXX20)


def _torch_facts() -> tuple[str, str | None, Path]:
    import torch  # the build venv's torch; imported lazily so the pure helpers need nothing

    return torch.__version__, torch.version.cuda, Path(torch.__file__).parent / "include"


def main(argv: list[str] | None = None) -> int:
    """CLI used by ci/setup.sh, images/scripts/build-mmcv.sh and ci/gpu-check.sh."""
    parser = argparse.ArgumentParser(prog="python -m images.mmcvbuild", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    key = sub.add_parser("key", help="print the wheel cache key for this venv's torch")
    key.add_argument("--mmcv", required=True)
    key.add_argument("--arch-list", default="", help="TORCH_CUDA_ARCH_LIST (CUDA torch only)")
    nvcc = sub.add_parser("nvcc-spec", help="print the pip requirement for NVIDIA's nvcc wheel")
    nvcc.add_argument("cuda", help="CUDA version, e.g. 13.0")
    sub.add_parser("needs-cxx20", help="exit 0 when this torch's headers need C++20, else 1")
    patch = sub.add_parser("patch-std", help="make mmcv's setup.py compile as C++20 (in place)")
    patch.add_argument("setup_py", type=Path)
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (ValueError, OSError) as err:
        print(f"[mmcvbuild] error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.cmd == "patch-std":
        text = args.setup_py.read_text()
        args.setup_py.write_text(patch_cxx_std(text))
        print(f"[mmcvbuild] {args.setup_py}: {CXX17} -> {CXX20} (open-mmlab/mmcv#3341)")
        return 0
    if args.cmd == "nvcc-spec":
        if args.cuda not in NVCC_WHEELS:
            raise ValueError(
                f"no known nvcc wheel for CUDA {args.cuda}; known: {', '.join(NVCC_WHEELS)}"
            )
        print(NVCC_WHEELS[args.cuda])
        return 0
    version, cuda, include = _torch_facts()
    if args.cmd == "key":
        tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
        print(
            cache_key(
                mmcv=args.mmcv,
                torch=version,
                python_tag=tag,
                cuda=cuda or "cpu",
                arch_list=args.arch_list,
            )
        )
        return 0
    header = include / "ATen" / "ATen.h"
    needed = needs_cxx20(header.read_text())
    print(
        f"[mmcvbuild] torch {version}: {header} {'needs' if needed else 'accepts'} "
        f"{'C++20' if needed else 'C++17'}",
        file=sys.stderr,
    )
    return 0 if needed else 1


if __name__ == "__main__":
    sys.exit(main())
