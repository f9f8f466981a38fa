#!/usr/bin/env bash
# Runtime stage, one RUN: Python + a venv, torch, the builder's mmcv wheel, mmdet/mmengine/determined
# and the staging deps; a constraints file that pins torch and mmcv for every later pip install;
# /opt/mmdet-determined/image.json (what the image must contain); then the build-time checks.
set -euo pipefail
: "${VARIANT:?}" "${PYTHON_VERSION:?}" "${CUDA:?}" "${TORCH_PIN:?}" "${MMCV_VERSION:?}"
: "${MMDET_VERSION:?}" "${MMENGINE_VERSION:?}" "${DETERMINED_VERSION:?}" "${TORCH_VERSION:?}"
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=images/scripts/pip-env.sh
. "$here/pip-env.sh"
shopt -s nullglob

apt_install python3 python3-venv ca-certificates
have="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$have" != "$PYTHON_VERSION" ]; then
  echo "[image] error: the base image's python3 is $have, the matrix says $PYTHON_VERSION" >&2
  exit 1
fi
python3 -m venv /opt/venv
pip=(/opt/venv/bin/python -m pip)

mmcv_wheels=(/mnt/mmcv/mmcv-"$MMCV_VERSION"-*.whl)
constraints="$here/constraints.txt"
# setuptools: mmengine loads `mmdet::` configs through pkg_resources, which setuptools 81 removed
# (torch's wheel pulls the newest one; a real trial failed with "No module named 'pkg_resources'").
printf '%s\nmmcv==%s\nsetuptools==80.9.0\n' "$TORCH_PIN" "$MMCV_VERSION" >"$constraints"

torch_src=(--extra-index-url "${TORCH_INDEX_URL:?}")
torch_wheels=(/mnt/wheelhouse/torch-*.whl)
[ "${#torch_wheels[@]}" -gt 0 ] && torch_src=(--find-links /mnt/wheelhouse)
"${pip[@]}" install -c "$constraints" "${torch_src[@]}" "$TORCH_PIN"
read -r -a extra <<<"${EXTRA_PACKAGES:-}"
"${pip[@]}" install -c "$constraints" "${mmcv_wheels[@]}" "mmdet==$MMDET_VERSION" \
  "mmengine==$MMENGINE_VERSION" "determined==$DETERMINED_VERSION" "${extra[@]}"

# mmcv and mmengine require opencv-python, whose cv2 needs libGL (Mesa + LLVM: ~250 MB in every
# image). opencv-python-headless is the same cv2 without GUI; swap it in at the same version.
cv_version="$("${pip[@]}" show opencv-python 2>/dev/null | sed -n 's/^Version: //p')"
if [ -n "$cv_version" ]; then
  "${pip[@]}" uninstall -y -q opencv-python
  "${pip[@]}" install -c "$constraints" --no-deps --force-reinstall \
    "opencv-python-headless==$cv_version"
  printf 'opencv-python-headless==%s\n' "$cv_version" >>"$constraints"
fi

# torch's CUDA wheels ship the toolkit headers (cuda_runtime.h, cublas.h, nccl.h, …): only a
# compiler needs them, and the runtime image has none (nvcc stayed in the builder stage). PyPI's
# torch is a CUDA build in the cpu variant too.
/opt/venv/bin/python - <<'PYEOF'
import pathlib, shutil, sysconfig
site = pathlib.Path(sysconfig.get_paths()["purelib"])
dirs = sorted(site.glob("nvidia/*/include"))
size = sum(f.stat().st_size for d in dirs for f in d.rglob("*") if f.is_file())
for d in dirs:
    shutil.rmtree(d)
print(f"[image] removed CUDA headers: {len(dirs)} dirs, {size / 2**20:.0f} MiB")
PYEOF

cat >"$here/image.json" <<JSON
{"variant": "$VARIANT", "python": "$PYTHON_VERSION", "cuda": "$CUDA", "torch": "$TORCH_PIN",
 "torch_version": "$TORCH_VERSION",
 "mmcv": "$MMCV_VERSION", "mmdet": "$MMDET_VERSION", "mmengine": "$MMENGINE_VERSION",
 "determined": "$DETERMINED_VERSION"}
JSON
/opt/venv/bin/python "$here/smoke_check.py" --build-time
