#!/usr/bin/env bash
# One idempotent setup for users, CI and images-on-this-machine:
#   a virtualenv with torch, mmcv 2.1.0 compiled *with ops*, mmdet/mmengine/determined and this project.
# torch comes from PyPI (on Linux x86_64 that is a CUDA build with NVIDIA's wheels, ~4 GB; it runs on
# CPU too). mmcv gets its CPU ops (~19 min on 2 cores), and its CUDA ops as well when there is a GPU
# to build for: TORCH_CUDA_ARCH_LIST set, or a GPU visible to torch (then "8.0 9.0+PTX"); FORCE_CUDA=1,
# ~30 min on 2 idle cores. A CPU machine with PyPI's CUDA torch gets the CPU ops only.
# The wheel is stripped and cached under $MMDET_DET_CACHE/wheels/<key>/, the key made by
# `python -m images.mmcvbuild key`: mmcv2.1.0-torch2.13.0-cp311-cu130-cpuops (PyPI's CUDA torch,
# CPU ops), mmcv2.1.0-torch2.13.0-cp311-cpu (a CPU torch), or with CUDA ops
# mmcv2.1.0-torch2.14.1-cp311-cu130-sm80.sm90+ptx (CUDA version and arch list are part of it).
# Ends by proving what it built: mmcv.ops import and answer on CPU, and on CUDA every requested
# arch's SASS (and PTX where asked) is in mmcv/_ext*.so (cuobjdump, images/cudacheck.py).
#
# Environment knobs:
#   VENV=.venv                   where the virtualenv lives
#   PYTHON=python3               interpreter that creates it
#   TORCH_SPEC=torch==2.13.0     from PyPI (torch 2.13.0+cu130); torch==2.14.1 for the cu130 image's
#   TORCH_INDEX_URL=             e.g. https://download.pytorch.org/whl/cpu where that is reachable
#   TORCH_CUDA_ARCH_LIST=        the switch for mmcv's CUDA ops, e.g. "8.0 9.0+PTX" (A100 + H100/H200
#                                SASS, PTX for newer GPUs); empty = CPU ops unless a GPU is visible
#   CUDA_HOME=/usr/local/cuda    nvcc to use; when it has none, NVIDIA's nvcc wheel goes into the venv
#   NVCC_SPEC=                   that wheel (default from images/mmcvbuild.py: 13.0 -> cuda-toolkit 13.0.3.0)
#   MAX_JOBS=$(nproc)            parallel compile jobs (mmcv itself would take >= 4)
# The compile itself is images/scripts/compile-mmcv.sh (shared with the image builder and the GPU check).
#   MMDET_DET_CACHE=~/.cache/mmdet-determined
#   EXTRAS=dev                   project extras to install ("" for runtime only)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-}"
ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-}"
GPU_ARCH_DEFAULT="8.0 9.0+PTX"
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
if "$PY" -c "import torch" 2>/dev/null; then
  "${PIP[@]}" "${torch_args[@]}"
else
  # A fresh venv: PyPI's torch and its NVIDIA wheels are ~4 GB; show each download as it starts.
  log "installing $TORCH_SPEC (with its CUDA wheels from PyPI: ~4 GB, a few minutes)"
  "$PY" -m pip install --disable-pip-version-check --progress-bar off "${torch_args[@]}" |
    grep --line-buffered -E '^ *(Downloading|Successfully installed)' | sed -u 's/^ */[setup]   /' >&2
fi
CUDA="$("$PY" -c 'import torch; print(torch.version.cuda or "")' 2>/dev/null)"
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

if [ -n "$CUDA" ] && [ -z "$ARCH_LIST" ]; then
  if "$PY" -c 'import sys, torch; sys.exit(torch.cuda.device_count() == 0)' 2>/dev/null; then
    ARCH_LIST="$GPU_ARCH_DEFAULT"
    log "torch sees a GPU: mmcv gets CUDA ops for TORCH_CUDA_ARCH_LIST=\"$ARCH_LIST\""
  else
    log "no GPU and no TORCH_CUDA_ARCH_LIST: mmcv gets its CPU ops (CUDA torch $CUDA runs on CPU;" \
      "set TORCH_CUDA_ARCH_LIST=\"$GPU_ARCH_DEFAULT\" to compile the CUDA ops too)"
  fi
fi
CUDA_OPS="${CUDA:+${ARCH_LIST:+yes}}"  # "" = CPU ops only
if [ -n "$CUDA_OPS" ]; then
  export TORCH_CUDA_ARCH_LIST="$ARCH_LIST"
  # cuobjdump proves the arches (images/cudacheck.py); a machine without a CUDA toolkit has none.
  if ! PYTHONPATH="$ROOT" "$PY" -c 'from images.cudacheck import find_cuobjdump as f; f()' 2>/dev/null; then
    log "no cuobjdump: installing $CUOBJDUMP_SPEC into the venv"
    "${PIP[@]}" "$CUOBJDUMP_SPEC"
  fi
else
  unset TORCH_CUDA_ARCH_LIST
fi
key="$(project images.mmcvbuild key --mmcv "$MMCV_VERSION" --arch-list "${CUDA_OPS:+$ARCH_LIST}")"
wheel_dir="$CACHE/wheels/$key"
if ! ls "$wheel_dir"/mmcv-"$MMCV_VERSION"-*.whl >/dev/null 2>&1; then
  log "building mmcv $MMCV_VERSION with ops for $key (CPU ops ~19 min, CUDA ~30 min on 2 cores; cached afterwards)"
  # One build folder per key, kept when a build is interrupted (Ctrl-C, a stopped CI job, a
  # killed session): the next setup re-runs ninja in it, which compiles only the units not yet
  # done, so a 30-minute CUDA compile is never started over. flock: one build per key at a time.
  tmp="$CACHE/wheels/.build-$key"
  mkdir -p "$tmp"
  exec 9>"$tmp.lock"
  if ! flock -n 9; then
    log "another setup is building $key; waiting for it"
    flock 9
  fi
  if ! ls "$wheel_dir"/mmcv-"$MMCV_VERSION"-*.whl >/dev/null 2>&1; then
    [ -d "$tmp/.work" ] && log "resuming the interrupted build in $tmp"
    PY="$PY" MMCV_VERSION="$MMCV_VERSION" bash "$ROOT/images/scripts/compile-mmcv.sh" "$tmp"
    mkdir -p "$wheel_dir"
    mv "$tmp"/build.log "$tmp"/build-info.json "$wheel_dir/"
    mv "$tmp"/mmcv-*.whl "$wheel_dir/"  # the wheel last: its presence marks the cache entry complete
    rm -rf "$tmp"
  fi
  exec 9>&-
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

if [ -n "$CUDA_OPS" ]; then
  # The proof that the installed mmcv runs on the GPUs asked for: SASS per arch (+PTX) in _ext*.so.
  project images.cudacheck "$SITE" --arch-list "$ARCH_LIST" >&2
fi
