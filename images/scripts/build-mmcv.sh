#!/usr/bin/env bash
# Builder stage: leave exactly one mmcv wheel in /out for the runtime stage.
#   1. a wheel from the supplied wheelhouse (/mnt/wheelhouse/mmcv-$MMCV_VERSION-*.whl), else
#   2. MMCV_FROM=prebuilt: OpenMMLab's wheel for this torch/CUDA pair (binary only, never an sdist), else
#   3. MMCV_FROM=source: compile with ops through compile-mmcv.sh (the script ci/setup.sh uses:
#      MMCV_WITH_OPS=1, FORCE_CUDA=1 on CUDA, the variant's TORCH_CUDA_ARCH_LIST and MAX_JOBS,
#      no build isolation, the C++20 fix where torch needs it, stripped, arches checked).
set -euo pipefail
: "${MMCV_VERSION:?}" "${MMCV_FROM:?}" "${TORCH_PIN:?}" "${CUDA:?}" "${PYTHON_VERSION:?}"
# shellcheck source=images/scripts/pip-env.sh
. "$(dirname "$0")/pip-env.sh"
mkdir -p /out
shopt -s nullglob

ready=(/mnt/wheelhouse/mmcv-"$MMCV_VERSION"-*.whl)
if [ "${#ready[@]}" -eq 1 ]; then
  cp "${ready[0]}" /out/
  echo "[image] mmcv: ${ready[0]##*/} from the wheelhouse"
  exit 0
elif [ "${#ready[@]}" -gt 1 ]; then
  echo "[image] error: several mmcv $MMCV_VERSION wheels in the wheelhouse: ${ready[*]##*/}" >&2
  exit 1
fi

apt_install python3 python3-venv python3-dev ca-certificates build-essential
python3 -m venv /opt/build
pip=(/opt/build/bin/python -m pip)

if [ "$MMCV_FROM" = prebuilt ]; then
  "${pip[@]}" download --no-deps --only-binary=:all: -d /out \
    -f "${MMCV_INDEX_URL:?}" "mmcv==$MMCV_VERSION"
else
  torch_src=(--extra-index-url "${TORCH_INDEX_URL:?}")
  torch_wheels=(/mnt/wheelhouse/torch-*.whl)
  [ "${#torch_wheels[@]}" -gt 0 ] && torch_src=(--find-links /mnt/wheelhouse)
  "${pip[@]}" install "${torch_src[@]}" "$TORCH_PIN" "setuptools==80.9.0" wheel ninja
  # The same compile as ci/setup.sh: C++20 fix where torch needs it, CUDA ops for the arch list
  # (nvcc from NVIDIA's wheel on a plain base; it stays in this stage), stripped, arches proven.
  if [ "$CUDA" != cpu ]; then export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:?}"; fi
  PY=/opt/build/bin/python MMCV_VERSION="$MMCV_VERSION" MAX_JOBS="${MAX_JOBS:-2}" \
    bash "$(dirname "$0")/compile-mmcv.sh" /out
  rm -f /out/build.log
fi
built=(/out/mmcv-"$MMCV_VERSION"-*.whl)
[ "${#built[@]}" -eq 1 ] || { echo "[image] error: expected one mmcv wheel in /out" >&2; exit 1; }
echo "[image] mmcv: ${built[0]##*/} ($MMCV_FROM)"
