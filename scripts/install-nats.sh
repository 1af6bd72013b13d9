#!/usr/bin/env bash
# Installs nats-server v2.15.2 (with JetStream) into the project-local .tools/bin, and does
# nothing when that version is already there or on PATH. Built with `go install`, because
# Debian's apt package is 2.9 (it ignores the 2.11 features and refuses 2.10 ones) and
# release binaries cannot be downloaded on the project's machines. Used by the tests and the
# rollout benchmark; the sidecar itself only needs a reachable server.
set -euo pipefail
cd "$(dirname "$0")/.."

NATS_VERSION="2.15.2"
say() { printf 'install-nats: %s\n' "$*" >&2; }
nats_version() { "$1" --version 2>/dev/null | awk '{print $NF}' | sed 's/^v//'; }

if [ -x .tools/bin/nats-server ] && [ "$(nats_version .tools/bin/nats-server)" = "$NATS_VERSION" ]; then
  exit 0
fi
if command -v nats-server >/dev/null 2>&1 && [ "$(nats_version "$(command -v nats-server)")" = "$NATS_VERSION" ]; then
  mkdir -p .tools/bin
  ln -sf "$(command -v nats-server)" .tools/bin/nats-server
  exit 0
fi
. scripts/lib/go-tool.sh
go_install_tool install-nats "the distribution tests" "github.com/nats-io/nats-server/v2@v$NATS_VERSION" "" "put nats-server v$NATS_VERSION on PATH"
say "installed $(.tools/bin/nats-server --version)"
