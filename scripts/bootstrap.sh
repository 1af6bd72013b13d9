#!/usr/bin/env bash
# Installs what Pavilion needs on a fresh machine, and does nothing when it is all there:
#   - Node.js >= 20.19 (checked, not installed)
#   - npm dependencies (npm ci, when node_modules is missing or older than package-lock.json)
#   - the opa CLI v1.22.3 (from PATH if it is that version, else `go install` into .tools/bin)
set -euo pipefail
cd "$(dirname "$0")/.."

OPA_VERSION="1.22.3"
say() { printf 'bootstrap: %s\n' "$*" >&2; }

node_ok=$(node -e 'const [a,b]=process.versions.node.split(".").map(Number); console.log(a>20||(a===20&&b>=19)?"yes":"no")' 2>/dev/null || echo missing)
if [ "$node_ok" != "yes" ]; then
  say "Node.js 20.19 or newer is required (found: $(node --version 2>/dev/null || echo none))."
  exit 1
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error >&2
fi

opa_version() { "$1" version 2>/dev/null | awk '/^Version:/ {print $2}'; }
if [ -x .tools/bin/opa ] && [ "$(opa_version .tools/bin/opa)" = "$OPA_VERSION" ]; then
  :
elif command -v opa >/dev/null 2>&1 && [ "$(opa_version "$(command -v opa)")" = "$OPA_VERSION" ]; then
  :
else
  if ! command -v go >/dev/null 2>&1; then
    say "the opa CLI v$OPA_VERSION is needed to build policy bundles, and Go is not installed to build it."
    say "Install Go 1.23+ (https://go.dev/doc/install, or 'apt-get install golang'), or put opa v$OPA_VERSION on PATH, then run again."
    exit 1
  fi
  say "building opa v$OPA_VERSION with go install (a few minutes the first time)"
  mkdir -p .tools/bin
  GOBIN="$PWD/.tools/bin" GOFLAGS=-mod=mod go install "github.com/open-policy-agent/opa@v$OPA_VERSION" >&2
fi
