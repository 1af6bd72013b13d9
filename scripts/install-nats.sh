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
if ! command -v go >/dev/null 2>&1; then
  say "nats-server v$NATS_VERSION is needed for the distribution tests, and Go is not installed to build it."
  say "Install Go 1.23+, or put nats-server v$NATS_VERSION on PATH, then run again."
  exit 1
fi
say "building nats-server v$NATS_VERSION with go install (about a minute the first time)"
mkdir -p .tools/bin
GOBIN="$PWD/.tools/bin" GOFLAGS=-mod=mod go install "github.com/nats-io/nats-server/v2@v$NATS_VERSION" >&2
say "installed $(.tools/bin/nats-server --version)"
