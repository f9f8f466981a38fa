#!/usr/bin/env bash
# Sourced by the RUN steps of images/Dockerfile: pip settings for the build, credentials from secrets.
# A pip config (private index with a token) and a CA bundle (TLS-intercepting networks) are mounted
# as build secrets under /run/secrets; they are read here and never written into the image.
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
export PIP_DEFAULT_TIMEOUT=120 DEBIAN_FRONTEND=noninteractive
if [ -s /run/secrets/ca_bundle ]; then
  export PIP_CERT=/run/secrets/ca_bundle
  echo "[image] pip: CA bundle from build secret"
fi
if [ -s /run/secrets/pip_conf ]; then
  export PIP_CONFIG_FILE=/run/secrets/pip_conf
  echo "[image] pip: config from build secret"
else
  # Never inherit a config from the base image or the host: PyPI directly.
  export PIP_CONFIG_FILE=/dev/null
fi

apt_install() {
  apt-get update -q
  apt-get install -y -q --no-install-recommends "$@"
  apt-get clean
  rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
}
