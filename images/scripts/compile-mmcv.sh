#!/usr/bin/env bash
# Compile mmcv from its sdist *with ops* against the torch of $PY and leave one stripped wheel in $1.
# The one way this project compiles mmcv: ci/setup.sh, the image's builder stage (build-mmcv.sh) and
# ci/gpu-check.sh all run it. CPU ops always; the CUDA ops too when torch is a CUDA build *and*
# TORCH_CUDA_ARCH_LIST names the GPUs (FORCE_CUDA=1, no GPU needed), compiled with CUDA_HOME's nvcc
# (default /usr/local/cuda) or, when there is none, NVIDIA's nvcc wheel installed next to torch.
# A CUDA torch without TORCH_CUDA_ARCH_LIST (PyPI's torch on a CPU machine) gets the CPU ops only,
# even where a GPU is visible: the arch list is the one switch. The full compiler output goes to $1/build.log,
# the timings and sizes to $1/build-info.json.
#
#   PY=venv/bin/python MMCV_VERSION=2.1.0 [TORCH_CUDA_ARCH_LIST="8.0 9.0+PTX"] [MAX_JOBS=N]
#   [MMCV_SDIST=mmcv-2.1.0.tar.gz (offline)] [NVCC_SPEC=…] bash compile-mmcv.sh OUT_DIR
set -euo pipefail
out="${1:?usage: compile-mmcv.sh OUT_DIR}"
: "${PY:?}" "${MMCV_VERSION:?}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# images/mmcvbuild.py + cudacheck.py: beside this script's dir in the repo, under images/ in an image.
if [ -f "$here/../mmcvbuild.py" ]; then helpers="$(cd "$here/../.." && pwd)"; else helpers="$here"; fi
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
log() { printf '[compile-mmcv] %s\n' "$*" >&2; }
helper() { PYTHONPATH="$helpers" "$PY" -m "$@"; }
PIP=("$PY" -m pip install --disable-pip-version-check -q)
# torch's cpp_extension compiles through ninja only when `ninja` is on PATH; without it, it silently
# compiles one unit at a time, MAX_JOBS ignored (a cold CUDA image build here went serial that way).
# The ninja that setup.sh / build-mmcv.sh install lives beside $PY, outside PATH in an unactivated venv.
PATH="$(dirname "$PY"):$PATH"
export PATH
command -v ninja >/dev/null || { log "no ninja on PATH or beside $PY: $PY -m pip install ninja"; exit 1; }

torch_cuda="$("$PY" -c 'import torch; print(torch.version.cuda or "")')"
cuda="${TORCH_CUDA_ARCH_LIST:+$torch_cuda}"  # "" = CPU ops only
site="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
if [ -n "$torch_cuda" ] && [ -z "$cuda" ]; then
  # mmcv's setup.py compiles CUDA ops whenever torch sees a GPU: hide it, and say so.
  export FORCE_CUDA=0 CUDA_VISIBLE_DEVICES=""
  log "torch is a CUDA $torch_cuda build, no TORCH_CUDA_ARCH_LIST: compiling the CPU ops only"
fi
if [ -n "$cuda" ]; then
  major="${cuda%%.*}"
  home="${CUDA_HOME:-/usr/local/cuda}"
  if [ ! -x "$home/bin/nvcc" ]; then
    spec="${NVCC_SPEC:-$(helper images.mmcvbuild nvcc-spec "$cuda")}"
    log "no nvcc in $home: installing $spec beside torch"
    "${PIP[@]}" "$spec"
    home="$site/nvidia/cu$major"
    # torch's extension link says -lcudart; the wheel ships only libcudart.so.<major>.
    [ -e "$home/lib/libcudart.so" ] || ln -s "libcudart.so.$major" "$home/lib/libcudart.so"
  fi
  # cuBLAS/cuSPARSE headers live in torch's CUDA wheels (a bare nvcc lacks them); torch's
  # cpp_extension adds $CUDA_INC_PATH to every compile.
  export CUDA_HOME="$home" FORCE_CUDA=1 CUDA_INC_PATH="$site/nvidia/cu$major/include"
  export PATH="$home/bin:$PATH"
  log "CUDA $cuda: nvcc $("$home/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p') from $home, TORCH_CUDA_ARCH_LIST=\"$TORCH_CUDA_ARCH_LIST\", MAX_JOBS=$MAX_JOBS"
fi

work="$out/.work"
mkdir -p "$work/sdist"
if [ -n "${MMCV_SDIST:-}" ]; then
  cp "$MMCV_SDIST" "$work/sdist/"
else
  "$PY" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: \
    --no-build-isolation -d "$work/sdist" "mmcv==$MMCV_VERSION"
fi
tar -xzf "$work/sdist/mmcv-$MMCV_VERSION.tar.gz" -C "$work"
src="$work/mmcv-$MMCV_VERSION"
# The project's one patch to mmcv: C++20 where torch's headers demand it (images/mmcvbuild.py).
if helper images.mmcvbuild needs-cxx20; then
  helper images.mmcvbuild patch-std "$src/setup.py" >&2
fi

start=$(date +%s)
# An interrupted earlier build may have left its wheel steps half done; its compiled units (in
# $src/build, reused by ninja) stay.
rm -rf "$work/dist" "$work/unpacked"
# --no-build-isolation: with isolation torch is absent and mmcv silently builds without ops.
set +e
MMCV_WITH_OPS=1 "$PY" -m pip wheel -v --disable-pip-version-check --no-deps --no-build-isolation \
  -w "$work/dist" "$src" 2>&1 | tee "$out/build.log" |
  grep --line-buffered -E '^ *\[[0-9]+/[0-9]+\] |error:' |
  awk '{ print substr($0, 1, 120); fflush() }' >&2  # a line per unit as it lands (cut would buffer)
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
  tail -n 40 "$out/build.log" >&2
  log "mmcv build failed (exit $status); full log: $out/build.log"
  exit 1
fi
seconds=$(($(date +%s) - start))

# Python's default CFLAGS carry -g: the CUDA _ext.so is ~180 MB with debug info, ~40 MB without.
so_bytes() { "$PY" -c 'import sys, zipfile
print(sum(i.file_size for i in zipfile.ZipFile(sys.argv[1]).infolist() if "/_ext" in i.filename))' "$1"; }
raw=$(so_bytes "$work"/dist/mmcv-*.whl)
"$PY" -m wheel unpack -d "$work/unpacked" "$work"/dist/mmcv-*.whl >/dev/null
find "$work/unpacked" -name '_ext*.so' -exec strip --strip-debug {} +
"$PY" -m wheel pack -d "$out" "$work"/unpacked/mmcv-* >/dev/null
printf '{"seconds": %d, "max_jobs": %s, "nproc": %d, "torch": "%s", "cuda": "%s", "arch_list": "%s", "ext_so_bytes": %s, "ext_so_bytes_unstripped": %s}\n' \
  "$seconds" "$MAX_JOBS" "$(nproc)" "$("$PY" -c 'import torch; print(torch.__version__)')" \
  "${cuda:-cpu}" "${cuda:+$TORCH_CUDA_ARCH_LIST}" "$(so_bytes "$out"/mmcv-*.whl)" "$raw" \
  >"$out/build-info.json"
rm -rf "$work"
log "built in $seconds s: $(cat "$out/build-info.json")"
if [ -n "$cuda" ]; then
  helper images.cudacheck "$out"/mmcv-*.whl --arch-list "$TORCH_CUDA_ARCH_LIST" >&2
fi
