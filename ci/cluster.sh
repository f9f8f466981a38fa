#!/usr/bin/env bash
# The real-cluster stage (ci/test.sh): the project's cpu image, built with buildah into the storage
# podman serves to the agents, then every test marked `cluster`. Those start their own cluster with
# `invoke cluster up` (PostgreSQL, Determined 0.38.1's master and agents; the first `up` builds both
# from Determined's Go module, about 6 minutes on 2 cores, cached for the next one) and take it down.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() {  # step NAME COMMAND...: run and print its time
  local name="$1" start
  shift
  start=$(date +%s)
  "$@"
  printf '[cluster-stage] %s: %ds\n' "$name" $(($(date +%s) - start))
}

step "cpu image" invoke build-image --variant cpu --wheelhouse auto
step "master and agent binaries" python -m devcluster build
step "tests on the real cluster" python -m pytest -m cluster -q -p no:cacheprovider --durations=10
