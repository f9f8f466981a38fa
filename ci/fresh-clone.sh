#!/usr/bin/env bash
# The unit tests as a user's fresh clone runs them: the checkout's files (tracked + untracked, not
# ignored) copied into a temp dir whose parent has no shared/, with COCO_TINY unset, so every test
# that needs COCO must use the project's own generated set. Fails if the run used a real sample.
# Uses the caller's virtualenv ($VENV); the copy comes first on sys.path and PYTHONPATH.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/fresh-clone.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
clone="$tmp/mmdet-determined"
mkdir "$clone"
git -C "$ROOT" ls-files -z --cached --others --exclude-standard \
  | (cd "$ROOT" && tar --null -T - -cf -) | tar -xf - -C "$clone"
[ -e "$tmp/shared" ] && { echo "[fresh-clone] $tmp/shared exists; refusing" >&2; exit 1; }

cd "$clone"
log="$tmp/pytest.log"
set +e
env -u COCO_TINY PYTHONPATH="$clone" MMDET_DET_CACHE="$tmp/cache" \
  "$VENV/bin/python" -m pytest -m "not slow" -q -p no:cacheprovider 2>&1 | tee "$log"
code=${PIPESTATUS[0]}
set -e
if ! grep -q "^COCO sample: generated shapes set" "$log"; then
  echo "[fresh-clone] the tests did not run on the generated set (see the 'COCO sample:' line)" >&2
  exit 1
fi
exit "$code"
