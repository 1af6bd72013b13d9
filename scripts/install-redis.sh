#!/usr/bin/env bash
# Installs redis-server, which the shared credential-state tests start on a random loopback
# port (no persistence). Does nothing (quietly) when it is there. Needs apt (Debian/Ubuntu)
# and root, or sudo; elsewhere install redis-server yourself (or set PAVILION_REDIS_SERVER).
set -euo pipefail
say() { printf 'install-redis: %s\n' "$*" >&2; }
if command -v redis-server >/dev/null 2>&1 || [ -n "${PAVILION_REDIS_SERVER:-}" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  say "redis-server is needed for the shared-state tests and apt-get is not available; install it with your package manager."
  exit 1
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    say "installing redis-server needs root (or sudo)"; exit 1
  fi
fi
say "installing redis-server with apt-get"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server >&2 \
  || { $SUDO apt-get update >&2 && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server >&2; }
# the package starts a system-wide server on 6379; the tests start their own and need none
$SUDO systemctl disable --now redis-server >/dev/null 2>&1 || $SUDO service redis-server stop >/dev/null 2>&1 || true
