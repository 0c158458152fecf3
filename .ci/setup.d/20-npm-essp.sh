#!/usr/bin/env bash
# The Node eSSP host `encrypted-smiley-secure-protocol` (pinned with its lock file) for
# tests/conformance/test_ssp_peer_node.py. Its serialport dependency compiles a small native
# module with node-gyp when no prebuilt binary can be fetched: that needs make and g++.
set -euo pipefail
dir=tests/conformance/ssp_node
if (cd "$dir" && node -e "require('encrypted-smiley-secure-protocol'); require('serialport')") \
    >/dev/null 2>&1; then
  exit 0
fi
if ! command -v make >/dev/null 2>&1 || ! command -v g++ >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq make g++ >/dev/null
  fi
fi
(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
(cd "$dir" && node -e "require('encrypted-smiley-secure-protocol'); require('serialport')")
