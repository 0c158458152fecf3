#!/usr/bin/env bash
# PostgreSQL server binaries for the backend's concurrency tests (tests/server/pgcluster.py
# runs a throwaway cluster with initdb; nothing is configured or started here).
# Idempotent and quiet: does nothing when initdb is already installed.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "30-postgresql: not root or no apt-get; install PostgreSQL's server binaries" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq </dev/null
apt-get install -y -qq --no-install-recommends postgresql </dev/null >/dev/null
# Debian's package starts (or tries to start) its own cluster; the tests need none of it.
if command -v pg_lsclusters >/dev/null 2>&1; then
  pg_lsclusters -h 2>/dev/null | while read -r version name _; do
    pg_ctlcluster "$version" "$name" stop >/dev/null 2>&1 || true
  done
fi
