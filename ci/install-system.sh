#!/usr/bin/env bash
# System packages the image build needs on a Debian/Ubuntu host (CI calls this before the tests):
#   buildah      daemonless OCI builder (runs as root with --isolation=chroot; overlay storage, else vfs)
#   debootstrap  makes the Debian base image that the buildah build starts from (no registry here)
#   skopeo       asks a registry whether a content-hash tag exists (build-image skips it then)
#   ca-certificates  the host bundle is mounted into RUN steps so pip can verify PyPI
#   iproute2     `ip netns`/veth/bridge for the two-node trial tests (tests/trial/test_trial_multinode.py)
#   podman runc  the local Determined cluster's container engine (`invoke cluster up`: the agents'
#                Docker API; runc because crun fails on hybrid-cgroup kernels)
#   postgresql   the local cluster's database (Debian 15; the server is started per cluster)
# Go (>= 1.22) builds Determined's master and agent; Debian's golang-go is too old, so it is checked,
# not installed: https://go.dev/dl.
# Idempotent: installs only what is missing, and runs `apt-get update` only when it has to install.
set -euo pipefail

PACKAGES=(buildah debootstrap skopeo ca-certificates iproute2 podman runc postgresql)

log() { printf '[install-system] %s\n' "$*" >&2; }

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

go_ok() {  # go 1.22 or newer on PATH
  local v
  v="$(go env GOVERSION 2>/dev/null)" || return 1
  v="${v#go}"
  [ "${v%%.*}" -gt 1 ] || { [ "${v%%.*}" -eq 1 ] && [ "$(echo "$v" | cut -d. -f2)" -ge 22 ]; }
}
if ! go_ok; then
  log "warning: Go >= 1.22 not found on PATH; \`invoke cluster up\` needs it to build Determined's" \
    "master and agent (https://go.dev/dl)"
fi

if [ "${#missing[@]}" -eq 0 ]; then
  log "already installed: ${PACKAGES[*]}"
  exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  SUDO=(sudo)
fi

log "installing: ${missing[*]}"
"${SUDO[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
log "ok: $(buildah --version)"
