#!/usr/bin/env bash
# The project's test command (README "Quickstart B"; .ci/run and the GitHub workflow call it):
# setup -> system tools -> lint -> unit tests -> unit tests in a fresh clone (no ../shared) ->
# integration tests -> smoke -> the trial on a real Determined cluster here, each stage timed.
#   ci/test.sh            everything
#   ci/test.sh unit lint  only the named stages (setup always runs first)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.venv}"
export PATH="$VENV/bin:$PATH"
STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(system lint unit fresh-clone integration smoke cluster)
declare -a TIMES=()

stage() {  # stage NAME COMMAND...: run, time, and record it
  local name="$1" start end
  shift
  printf '\n=== %s ===\n' "$name"
  start=$(date +%s)
  "$@"
  end=$(date +%s)
  TIMES+=("$(printf '%-12s %5ds' "$name" $((end - start)))")
  printf '=== %s: %ds ===\n' "$name" $((end - start))
}

summary() {
  printf '\nstage times:\n'
  printf '  %s\n' "${TIMES[@]}"
}
trap summary EXIT

stage setup bash ci/setup.sh
for s in "${STAGES[@]}"; do
  case "$s" in
    system) stage system bash ci/install-system.sh ;;
    lint) stage lint bash ci/lint.sh ;;
    unit) stage unit python -m pytest -m "not slow" -q ;;
    fresh-clone) stage fresh-clone bash ci/fresh-clone.sh ;;
    integration) stage integration python -m pytest -m "slow and not cluster" -q --durations=10 ;;
    smoke) stage smoke invoke smoke && stage smoke-warm invoke smoke --expect-warm ;;
    cluster) stage cluster bash ci/cluster.sh ;;
    *) echo "unknown stage '$s'; choose from: system lint unit fresh-clone integration smoke cluster" >&2; exit 2 ;;
  esac
done
