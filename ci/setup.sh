#!/usr/bin/env bash
# One idempotent setup for users, CI and images-on-this-machine:
#   a virtualenv with torch, mmcv 2.1.0 compiled *with ops*, mmdet/mmengine/determined and this project.
# With a CPU torch mmcv gets its CPU ops (~11 min on 2 cores); with a CUDA torch it also gets CUDA ops
# for TORCH_CUDA_ARCH_LIST (FORCE_CUDA=1; no GPU needed; ~40+ min on 2 cores for "8.0 9.0+PTX").
# The wheel is stripped and cached under $MMDET_DET_CACHE/wheels/<key>/, the key made by
# `python -m images.mmcvbuild key`: mmcv2.1.0-torch2.13.0-cp311-cpu, or for CUDA
# mmcv2.1.0-torch2.14.1-cp311-cu130-sm80.sm90+ptx (CUDA version and arch list are part of it).
# Ends by proving what it built: mmcv.ops import and answer on CPU, and on CUDA every requested
# arch's SASS (and PTX where asked) is in mmcv/_ext*.so (cuobjdump, images/cudacheck.py).
#
# Environment knobs:
#   VENV=.venv                   where the virtualenv lives
#   PYTHON=python3               interpreter that creates it
#   TORCH_SPEC=torch==2.13.0     CPU here; torch==2.14.1 gives torch 2.14.1+cu130 (CUDA 13)
#   TORCH_INDEX_URL=             e.g. https://download.pytorch.org/whl/cu130 (optional)
#   TORCH_CUDA_ARCH_LIST="8.0 9.0+PTX"   CUDA torch only: A100 + H100/H200 SASS, PTX for newer GPUs
#   CUDA_HOME=/usr/local/cuda    nvcc to use; when it has none, NVIDIA's nvcc wheel goes into the venv
#   NVCC_SPEC=cuda-toolkit[nvcc,cccl]==13.0.3.0   that wheel (default for CUDA 13.0 torch)
#   MAX_JOBS=$(nproc)            parallel compile jobs (mmcv itself would take >= 4)
#   MMDET_DET_CACHE=~/.cache/mmdet-determined
#   EXTRAS=dev                   project extras to install ("" for runtime only)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-}"
ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0 9.0+PTX}"
MMCV_VERSION="2.1.0"
CUOBJDUMP_SPEC="nvidia-cuda-cuobjdump==13.2.51"
CACHE="${MMDET_DET_CACHE:-$HOME/.cache/mmdet-determined}"
EXTRAS="${EXTRAS-dev}"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"

log() { printf '[setup] %s\n' "$*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check -q)
project() { PYTHONPATH="$ROOT" "$PY" -m "$@"; }  # the project's stdlib-only helpers, before it is installed

# Build tools first: mmcv's setup.py imports pkg_resources (gone in setuptools 82) while torch
# wants setuptools >= 77.0.3; 80.9.0 satisfies both.
"${PIP[@]}" "pip>=24" "setuptools==80.9.0" wheel ninja

torch_args=("$TORCH_SPEC")
[ -n "$TORCH_INDEX_URL" ] && torch_args+=(--index-url "$TORCH_INDEX_URL")
if ! "$PY" -c "import torch" 2>/dev/null; then
  log "installing $TORCH_SPEC"
fi
"${PIP[@]}" "${torch_args[@]}"
CUDA="$("$PY" -c 'import torch; print(torch.version.cuda or "")' 2>/dev/null)"
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

# nvcc for a CUDA torch: CUDA_HOME / /usr/local/cuda when it has nvcc, else NVIDIA's PyPI wheel in
# the venv (site-packages/nvidia/cu13: nvcc, cicc, crt, CCCL; torch's link needs libcudart.so).
# /usr/local/cuda here lacks the cuBLAS/cuSPARSE headers: the torch venv's nvidia/cu13/include has
# them, and torch's cpp_extension adds $CUDA_INC_PATH to every compile.
use_cuda_toolchain() {
  local home="${CUDA_HOME:-/usr/local/cuda}" spec
  if [ ! -x "$home/bin/nvcc" ]; then
    spec="${NVCC_SPEC:-}"
    [ -z "$spec" ] && [ "$CUDA" = 13.0 ] && spec="cuda-toolkit[nvcc,cccl]==13.0.3.0"
    [ -z "$spec" ] && spec="cuda-toolkit[nvcc,cccl]==$CUDA.*"
    log "no nvcc in $home: installing $spec into the venv"
    "${PIP[@]}" "$spec"
    home="$(ls -d "$SITE"/nvidia/cu"${CUDA%%.*}")"
    [ -e "$home/lib/libcudart.so" ] || ln -s libcudart.so."${CUDA%%.*}" "$home/lib/libcudart.so"
  fi
  export CUDA_HOME="$home" FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCH_LIST"
  export CUDA_INC_PATH="$SITE/nvidia/cu${CUDA%%.*}/include" PATH="$home/bin:$PATH"
  log "CUDA $CUDA: nvcc $("$home/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p') from $home, TORCH_CUDA_ARCH_LIST=\"$ARCH_LIST\", MAX_JOBS=$MAX_JOBS"
}

# Compile mmcv from its sdist with ops and leave one stripped wheel in $1.
build_mmcv() {
  local out="$1" work="$1/.work" src start status raw
  mkdir -p "$work/sdist"
  "$PY" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: \
    --no-build-isolation -d "$work/sdist" "mmcv==$MMCV_VERSION"
  tar -xzf "$work/sdist/mmcv-$MMCV_VERSION.tar.gz" -C "$work"
  src="$work/mmcv-$MMCV_VERSION"
  # The project's one patch to mmcv: C++20 where torch's headers demand it (images/mmcvbuild.py).
  if project images.mmcvbuild needs-cxx20; then
    project images.mmcvbuild patch-std "$src/setup.py" >&2
  fi
  start=$(date +%s)
  # --no-build-isolation: with isolation torch is absent and mmcv silently builds without ops.
  # The full compiler output goes to build.log; the console gets ninja's [n/N] progress.
  set +e
  MMCV_WITH_OPS=1 "$PY" -m pip wheel -v --disable-pip-version-check --no-deps \
    --no-build-isolation -w "$work/dist" "$src" 2>&1 | tee "$out/build.log" |
    grep --line-buffered -E '^\[[0-9]+/[0-9]+\] |error:' | cut -c1-160 >&2
  status=${PIPESTATUS[0]}
  set -e
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$out/build.log" >&2
    log "mmcv build failed (exit $status); full log: $out/build.log"
    exit 1
  fi
  # Python's default CFLAGS carry -g: the CUDA _ext.so is ~180 MB with debug info, ~40 MB without.
  raw=$(unzip -l "$work"/dist/mmcv-*.whl | awk '/_ext.*\.so$/ {print $1}')
  "$PY" -m wheel unpack -d "$work/unpacked" "$work"/dist/mmcv-*.whl >/dev/null
  find "$work/unpacked" -name '_ext*.so' -exec strip --strip-debug {} +
  "$PY" -m wheel pack -d "$out" "$work"/unpacked/mmcv-* >/dev/null
  printf '{"seconds": %d, "max_jobs": %s, "nproc": %d, "cuda": "%s", "arch_list": "%s", "ext_so_bytes": %s, "ext_so_bytes_unstripped": %s}\n' \
    $(($(date +%s) - start)) "$MAX_JOBS" "$(nproc)" "${CUDA:-cpu}" "${CUDA:+$ARCH_LIST}" \
    "$(unzip -l "$out"/mmcv-*.whl | awk '/_ext.*\.so$/ {print $1}')" "$raw" >"$out/build-info.json"
  rm -rf "$work"
  log "built in $(($(date +%s) - start)) s: $(cat "$out/build-info.json")"
}

[ -n "$CUDA" ] && use_cuda_toolchain
key="$(project images.mmcvbuild key --mmcv "$MMCV_VERSION" --arch-list "${CUDA:+$ARCH_LIST}")"
wheel_dir="$CACHE/wheels/$key"
if ! ls "$wheel_dir"/mmcv-"$MMCV_VERSION"-*.whl >/dev/null 2>&1; then
  log "building mmcv $MMCV_VERSION with ops for $key (CPU ~11 min, CUDA ~40+ min on 2 cores; cached afterwards)"
  mkdir -p "$CACHE/wheels"
  tmp="$(mktemp -d "$CACHE/wheels/.build.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  build_mmcv "$tmp"
  mkdir -p "$wheel_dir"
  mv "$tmp"/build.log "$tmp"/build-info.json "$wheel_dir/"
  mv "$tmp"/mmcv-*.whl "$wheel_dir/"  # the wheel last: its presence marks the cache entry complete
else
  log "using cached mmcv wheel $wheel_dir"
fi

spec="$ROOT"
[ -n "$EXTRAS" ] && spec="${ROOT}[${EXTRAS}]"
log "installing mmdet-determined ($spec)"
"${PIP[@]}" "$wheel_dir"/mmcv-"$MMCV_VERSION"-*.whl "${torch_args[@]}" -e "$spec" \
  -c "$ROOT/ci/constraints.txt"

"$PY" - <<'PYEOF'
import sys
try:
    import mmcv
    import torch
    from mmcv.ops import RoIAlign, batched_nms, nms  # noqa: F401
except ImportError as err:
    sys.exit(f"[setup] mmcv was built without its compiled ops ({err}); delete the cached wheel and rerun")
boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=torch.float32)
_, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
if keep.tolist() != [0, 2]:
    sys.exit(f"[setup] mmcv.ops.nms on CPU kept {keep.tolist()}, expected [0, 2]")
import mmdet, mmengine, determined  # noqa: E401
print(f"[setup] ok: torch {torch.__version__}, mmcv {mmcv.__version__} (ops; CPU nms answers), "
      f"mmdet {mmdet.__version__}, mmengine {mmengine.__version__}, "
      f"determined {determined.__version__}", file=sys.stderr)
PYEOF

if [ -n "$CUDA" ]; then
  # The proof that the wheel runs on the GPUs asked for: SASS per arch (+PTX) in mmcv/_ext*.so.
  if ! PYTHONPATH="$ROOT" "$PY" -c 'from images.cudacheck import find_cuobjdump as f; f()' 2>/dev/null; then
    log "no cuobjdump: installing $CUOBJDUMP_SPEC into the venv"
    "${PIP[@]}" "$CUOBJDUMP_SPEC"
  fi
  project images.cudacheck "$SITE" --arch-list "$ARCH_LIST" >&2
fi
