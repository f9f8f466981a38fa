#!/usr/bin/env bash
# One idempotent setup for users, CI and images-on-this-machine:
#   a virtualenv with torch, mmcv 2.1.0 compiled *with ops*, mmdet/mmengine/determined and this project.
# The mmcv wheel is cached under $MMDET_DET_CACHE/wheels/<mmcv>-<torch>-<python>-<cuda>/ so that a second
# setup skips the ~11 minute compile. Ends by importing mmcv.ops and fails loudly if the ops are missing.
#
# Environment knobs:
#   VENV=.venv                   where the virtualenv lives
#   PYTHON=python3               interpreter that creates it
#   TORCH_SPEC=torch==2.13.0     e.g. "torch==2.4.1" on a CUDA machine
#   TORCH_INDEX_URL=             e.g. https://download.pytorch.org/whl/cu124 (optional)
#   MMDET_DET_CACHE=~/.cache/mmdet-determined
#   EXTRAS=dev                   project extras to install ("" for runtime only)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-}"
MMCV_VERSION="2.1.0"
CACHE="${MMDET_DET_CACHE:-$HOME/.cache/mmdet-determined}"
EXTRAS="${EXTRAS-dev}"

log() { printf '[setup] %s\n' "$*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check -q)

# Build tools first: mmcv's setup.py imports pkg_resources (gone in setuptools 81) while torch 2.13
# wants setuptools >= 77.0.3; 80.9.0 satisfies both.
"${PIP[@]}" "pip>=24" "setuptools==80.9.0" wheel ninja

torch_args=("$TORCH_SPEC")
[ -n "$TORCH_INDEX_URL" ] && torch_args+=(--index-url "$TORCH_INDEX_URL")
if ! "$PY" -c "import torch" 2>/dev/null; then
  log "installing $TORCH_SPEC"
fi
"${PIP[@]}" "${torch_args[@]}"

key="$("$PY" - <<PYEOF
import sys, torch
cuda = "cu" + torch.version.cuda.replace(".", "") if torch.version.cuda else "cpu"
torch_v = torch.__version__.split("+")[0]
print(f"mmcv${MMCV_VERSION}-torch{torch_v}-cp{sys.version_info[0]}{sys.version_info[1]}-{cuda}")
PYEOF
)"
wheel_dir="$CACHE/wheels/$key"
if ! ls "$wheel_dir"/mmcv-"$MMCV_VERSION"-*.whl >/dev/null 2>&1; then
  log "building mmcv $MMCV_VERSION with ops for $key (about 11 minutes on 2 cores; cached afterwards)"
  mkdir -p "$CACHE/wheels"
  tmp="$(mktemp -d "$CACHE/wheels/.build.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  # --no-build-isolation: with isolation torch is absent and mmcv silently builds without ops.
  MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    "$PY" -m pip wheel --disable-pip-version-check --no-deps --no-build-isolation \
    --no-binary mmcv -w "$tmp" "mmcv==$MMCV_VERSION"
  mkdir -p "$wheel_dir"
  mv "$tmp"/mmcv-*.whl "$wheel_dir/"
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
    from mmcv.ops import RoIAlign, batched_nms, nms  # noqa: F401
except ImportError as err:
    sys.exit(f"[setup] mmcv was built without its compiled ops ({err}); delete the cached wheel and rerun")
import mmdet, mmengine, torch, determined  # noqa: E401
print(f"[setup] ok: torch {torch.__version__}, mmcv {mmcv.__version__} (ops), mmdet {mmdet.__version__}, "
      f"mmengine {mmengine.__version__}, determined {determined.__version__}", file=sys.stderr)
PYEOF
