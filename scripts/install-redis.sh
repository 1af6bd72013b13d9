#!/usr/bin/env bash
# Installs redis-server, which the shared credential-state tests start on a random loopback
# port (no persistence). Does nothing (quietly) when it is there. Needs apt (Debian/Ubuntu)
# and root, or sudo; elsewhere install redis-server yourself (or set PAVILION_REDIS_SERVER).
set -euo pipefail
. "$(dirname "$0")/lib/apt.sh"
if command -v redis-server >/dev/null 2>&1 || [ -n "${PAVILION_REDIS_SERVER:-}" ]; then
  exit 0
fi
apt_install install-redis redis-server
# the package may start a system-wide server on 6379; the tests start their own and need none
if [ "$(id -u)" = "0" ]; then SUDO=""; else SUDO="sudo"; fi
$SUDO systemctl disable --now redis-server >/dev/null 2>&1 || $SUDO service redis-server stop >/dev/null 2>&1 || true
