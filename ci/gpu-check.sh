#!/usr/bin/env bash
# The GPU check (ci/gpucheck.py has the plan and the details; README "GPU check" the how-to).
#   bash ci/gpu-check.sh prepare                  here: fill gpu-carry/ (wheels, mmcv sdist, COCO)
#   bash ci/gpu-check.sh run --phase build        on the H200: install, compile mmcv for 9.0, ops
#   bash ci/gpu-check.sh run --phase train        on the H200: 3 models x fp32/fp16(/bf16), bench
#   bash ci/gpu-check.sh run --cpu-rehearsal      here: the same steps on CPU, Python 3.11
# Results: $OUT/gpu-check.json and $OUT/gpu-check.log (OUT defaults to ./gpu-check-out).
# The step helpers below (install, mmcv-compile, mmcv-cached) are called by ci/gpucheck.py.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cmd="${1:?usage: gpu-check.sh prepare|run [options]}"
shift

case "$cmd" in
  prepare)
    exec "${PREPARE_PYTHON:-$ROOT/.venv/bin/python}" "$ROOT/ci/gpucheck.py" prepare "$@" ;;
  run)
    exec python3 "$ROOT/ci/gpucheck.py" run "$@" ;;
  machine-base)
    # machine-base WORK (rehearsal only): a fresh venv holding what the GPU machine has (numpy,
    # opencv-headless, matplotlib, scipy, tensorboard, pytest), with CPU torch for its CUDA one.
    work="$1"
    if [ ! -f "$work/venv/.machine-base" ]; then
      rm -rf "$work/venv"
      python3 -m venv "$work/venv"
      "$work/venv/bin/python" -m pip install -q torch==2.13.0 numpy opencv-python-headless \
        matplotlib scipy tensorboard pytest
      touch "$work/venv/.machine-base"
    fi
    printf '{"venv": "%s", "base": "rehearsal"}\n' "$work/venv" ;;
  install)
    # install WHEELS WORK: a venv over the machine's packages (torch, numpy, opencv-headless, …)
    # with the carried wheels installed offline, then this project (editable, no deps).
    wheels="$1" work="$2"
    [ -x "$work/venv/bin/python" ] || python3 -m venv --system-site-packages "$work/venv"
    pip=("$work/venv/bin/python" -m pip install -q --no-index --find-links "$wheels" --no-deps)
    "${pip[@]}" -r "$wheels/requirements.txt"
    "${pip[@]}" --no-build-isolation -e "$ROOT"
    # A fallback (a package of the machine's own closure that a carried one needs) only where
    # pip check says it is missing; mmcv comes next, and opencv-python is the headless build there.
    missing="$("$work/venv/bin/python" -m pip check 2>/dev/null |
      sed -n 's/.* requires \([^,]*\), which is not installed\./\1/p' | sort -u | grep -v -x -E 'mmcv|opencv-python' || true)"
    for name in $missing; do
      "${pip[@]}" --find-links "$wheels/fallback" "$name"
    done
    "$work/venv/bin/python" -m pip check || true
    printf '{"venv": "%s", "wheels": %d, "fallbacks_installed": "%s"}\n' "$work/venv" \
      "$(grep -c . "$wheels/requirements.txt")" "$(tr "\n" " " <<<"$missing")" ;;
  mmcv-compile)
    # mmcv-compile OUT_DIR PY: the one compile script (env: MMCV_SDIST, TORCH_CUDA_ARCH_LIST, MAX_JOBS).
    out="$1" py="$2"
    mkdir -p "$out"
    rm -f "$out"/mmcv-*.whl
    PY="$py" bash "$ROOT/images/scripts/compile-mmcv.sh" "$out"
    "$py" -m pip install -q --no-index --no-deps --force-reinstall "$out"/mmcv-*.whl
    cat "$out/build-info.json" ;;
  mmcv-cached)
    # mmcv-cached PY: rehearsal only: ci/setup.sh's cached CPU wheel instead of a compile.
    py="$1"
    key="$(PYTHONPATH="$ROOT" "$py" -m images.mmcvbuild key --mmcv 2.1.0)"
    wheel="$(ls "${MMDET_DET_CACHE:-$HOME/.cache/mmdet-determined}/wheels/$key"/mmcv-2.1.0-*.whl)"
    "$py" -m pip install -q --no-index --no-deps "$wheel"
    printf '{"wheel": "%s", "compiled": false}\n' "$wheel" ;;
  *)
    echo "unknown command '$cmd'; choose: prepare, run" >&2
    exit 2 ;;
esac
