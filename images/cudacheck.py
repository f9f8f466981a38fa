"""Prove which GPUs a compiled extension runs on: cuobjdump's SASS and PTX against the arch list.

``TORCH_CUDA_ARCH_LIST="8.0 9.0+PTX"`` asks for sm_80 and sm_90 machine code (SASS, one cubin per
arch) and, for ``+PTX``, compute_90 PTX that newer GPUs JIT-compile. ``check_extension`` lists what
an ``.so`` really carries (``cuobjdump --list-elf`` / ``--list-ptx``) and reports every requested
arch that is missing; a missing one means the extension fails on that GPU with "no kernel image is
available". Stdlib only: ci/setup.sh, ``invoke test-image`` (from the host, on the image's mounted
filesystem) and ci/gpu-check.sh run it as ``python -m images.cudacheck PATH --arch-list "…"``.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from images.mmcvbuild import ARCH_RE, arch_tokens

ELF_RE = re.compile(r"\.sm_(\d+[a-z]?)\.cubin\b")
PTX_RE = re.compile(r"\.sm_(\d+[a-z]?)\.ptx\b")
NO_DEVICE_CODE = "does not contain device code"
CUOBJDUMP_PIN = "nvidia-cuda-cuobjdump==13.2.51"
EXT_GLOB = "mmcv/_ext*.so"


class ArchCheckError(Exception):
    """cuobjdump is missing or failed, or the path holds no extension."""


@dataclass(frozen=True)
class Wanted:
    """Requested SASS and PTX targets as cuobjdump names them (``"80"``, ``"90a"``)."""

    sass: tuple[str, ...]
    ptx: tuple[str, ...]


@dataclass(frozen=True)
class ArchReport:
    """What one extension carries against what was asked."""

    path: str
    wanted: Wanted
    sass: tuple[str, ...]
    ptx: tuple[str, ...]

    @property
    def missing_sass(self) -> tuple[str, ...]:
        return tuple(a for a in self.wanted.sass if a not in self.sass)

    @property
    def missing_ptx(self) -> tuple[str, ...]:
        return tuple(a for a in self.wanted.ptx if a not in self.ptx)

    @property
    def ok(self) -> bool:
        return not self.missing_sass and not self.missing_ptx

    def summary(self) -> str:
        """One line: ``_ext.so: SASS sm_80 sm_90, PTX sm_90 (asked: …)`` + what is missing."""
        have = (
            f"SASS {' '.join('sm_' + a for a in self.sass) or 'none'}, "
            f"PTX {' '.join('sm_' + a for a in self.ptx) or 'none'}"
        )
        line = f"{Path(self.path).name}: {have}"
        missing = [f"SASS sm_{a}" for a in self.missing_sass]
        missing += [f"PTX sm_{a}" for a in self.missing_ptx]
        if missing:
            line += f"; MISSING {', '.join(missing)}"
        return line


def wanted(arch_list: str) -> Wanted:
    """``"8.0 9.0+PTX"`` -> SASS ("80", "90"), PTX ("90",)."""
    sass, ptx = [], []
    for token in arch_tokens(arch_list):
        major, minor, suffix, plus_ptx = ARCH_RE.match(token).groups()
        name = f"{major}{minor}{suffix}"
        sass.append(name)
        if plus_ptx:
            ptx.append(name)
    if not sass:
        raise ValueError("the arch list is empty; pass e.g. --arch-list '8.0 9.0+PTX'")
    return Wanted(tuple(dict.fromkeys(sass)), tuple(dict.fromkeys(ptx)))


def parse_listing(text: str, pattern: re.Pattern[str] = ELF_RE) -> tuple[str, ...]:
    """The sorted, distinct arch names in a ``cuobjdump --list-elf`` (or ``--list-ptx``) output."""
    return tuple(sorted(set(pattern.findall(text)), key=lambda a: (int(re.sub(r"\D", "", a)), a)))


def find_cuobjdump() -> str:
    """$CUOBJDUMP, PATH, $CUDA_HOME/bin, /usr/local/cuda/bin, then NVIDIA's wheels in this env."""
    candidates = [os.environ.get("CUOBJDUMP", ""), shutil.which("cuobjdump") or ""]
    for home in (os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"):
        if home:
            candidates.append(os.path.join(home, "bin", "cuobjdump"))
    # NVIDIA's cuobjdump wheel, or triton's copy, in this env or (venv over system) the system's.
    sites = dict.fromkeys([sysconfig.get_paths()["purelib"], *(p for p in sys.path if p.endswith(("site-packages", "dist-packages")))])  # fmt: skip
    for site in sites:
        candidates += sorted(glob.glob(os.path.join(site, "nvidia", "cu*", "bin", "cuobjdump")))
        candidates += glob.glob(
            os.path.join(site, "triton", "backends", "nvidia", "bin", "cuobjdump")
        )
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise ArchCheckError(
        f"cuobjdump not found (no $CUOBJDUMP, PATH, CUDA_HOME); pip install {CUOBJDUMP_PIN}"
    )


def list_arches(so: Path, *, cuobjdump: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(SASS arches, PTX arches) in one shared object."""
    out = {}
    for flag in ("--list-elf", "--list-ptx"):
        proc = subprocess.run(
            [cuobjdump, flag, str(so)], capture_output=True, text=True, check=False
        )
        text = proc.stdout + proc.stderr
        if proc.returncode != 0 and NO_DEVICE_CODE not in text:
            detail = (text.strip().splitlines() or ["no output"])[-1]
            raise ArchCheckError(f"{cuobjdump} {flag} {so} exited {proc.returncode}: {detail}")
        out[flag] = text
    return parse_listing(out["--list-elf"], ELF_RE), parse_listing(out["--list-ptx"], PTX_RE)


def check_extension(path: Path, arch_list: str, *, cuobjdump: str | None = None) -> ArchReport:
    """Report the arches of the extension at ``path`` (an .so, a dir holding mmcv/, or a wheel)."""
    want = wanted(arch_list)
    tool = cuobjdump or find_cuobjdump()
    path = Path(path)
    if path.suffix == ".whl":
        with tempfile.TemporaryDirectory(prefix="cudacheck-") as tmp:
            so = _extract_ext(path, Path(tmp))
            sass, ptx = list_arches(so, cuobjdump=tool)
    else:
        so = find_ext(path) if path.is_dir() else path
        if not so.is_file():
            raise ArchCheckError(
                f"{so} does not exist; pass an .so, a wheel or a site-packages dir"
            )
        sass, ptx = list_arches(so, cuobjdump=tool)
    return ArchReport(str(path if path.suffix == ".whl" else so), want, sass, ptx)


def find_ext(root: Path) -> Path:
    """mmcv's compiled extension under ``root`` (a site-packages dir or any dir above one)."""
    hits = sorted(Path(root).glob(EXT_GLOB)) or sorted(
        Path(root).rglob("site-packages/" + EXT_GLOB)
    )
    if len(hits) != 1:
        raise ArchCheckError(
            f"expected one {EXT_GLOB} under {root}, found {len(hits)}: is mmcv built with ops?"
        )
    return hits[0]


def _extract_ext(wheel: Path, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if re.fullmatch(r"mmcv/_ext[^/]*\.so", n)]
        if len(names) != 1:
            raise ArchCheckError(f"{wheel} holds {len(names)} mmcv/_ext*.so; built without ops?")
        return Path(zf.extract(names[0], dest))


def main(argv: list[str] | None = None) -> int:
    """``python -m images.cudacheck PATH --arch-list "8.0 9.0+PTX"``: exit 1 when one is missing."""
    parser = argparse.ArgumentParser(prog="python -m images.cudacheck", description=__doc__)
    parser.add_argument("path", type=Path, help="an .so, an mmcv wheel, or a dir holding mmcv/")
    parser.add_argument(
        "--arch-list", required=True, help="TORCH_CUDA_ARCH_LIST, e.g. '8.0 9.0+PTX'"
    )
    parser.add_argument("--cuobjdump", help="the cuobjdump binary (default: searched)")
    args = parser.parse_args(argv)
    try:
        report = check_extension(args.path, args.arch_list, cuobjdump=args.cuobjdump)
    except (ArchCheckError, ValueError, OSError, zipfile.BadZipFile) as err:
        print(f"[cudacheck] error: {err}", file=sys.stderr)
        return 2
    status = "ok  " if report.ok else "FAIL"
    print(f"[cudacheck] {status} {report.summary()} (asked: {args.arch_list})")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
