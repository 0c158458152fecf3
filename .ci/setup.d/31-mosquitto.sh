#!/usr/bin/env bash
# The mosquitto MQTT broker for the backend's MQTT push tests (tests/server/mqttbroker.py
# starts a throwaway broker itself; nothing is configured or started here).
# Idempotent and quiet: does nothing when mosquitto is already installed.
set -euo pipefail
if [ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "31-mosquitto: not root or no apt-get; install mosquitto" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq </dev/null
apt-get install -y -qq --no-install-recommends mosquitto </dev/null >/dev/null
# Debian's package may start a system broker on port 1883; the tests need none of it.
if command -v systemctl >/dev/null 2>&1; then
  systemctl stop mosquitto >/dev/null 2>&1 || true
fi
