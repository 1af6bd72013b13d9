#!/usr/bin/env bash
# The benchmarks' load generators: ghz (gRPC) and vegeta (HTTP) into .tools/bin with `go install`,
# paced (bench/loadgen) with `go build`, h2load (nghttp2, C) with apt. Does
# nothing when they are there. Built with `go install` from the Go module proxy.
set -euo pipefail
cd "$(dirname "$0")/.."
GHZ_VERSION=0.93.0
VEGETA_VERSION=12.13.0
say() { printf 'install-loadgen: %s\n' "$*" >&2; }
mkdir -p .tools/bin
if [ ! -x .tools/bin/ghz ]; then
  say "building ghz v$GHZ_VERSION with go install"
  GOBIN="$PWD/.tools/bin" GOFLAGS=-mod=mod go install "github.com/bojand/ghz/cmd/ghz@v$GHZ_VERSION" >&2
fi
if [ ! -x .tools/bin/vegeta ]; then
  say "building vegeta v$VEGETA_VERSION with go install"
  GOBIN="$PWD/.tools/bin" GOFLAGS=-mod=mod go install "github.com/tsenart/vegeta/v12@v$VEGETA_VERSION" >&2
fi
# paced: the open-loop client in bench/loadgen (its go.sum pins golang.org/x/net); rebuilt when
# its source is newer than the binary
if [ ! -x .tools/bin/paced ] || [ bench/loadgen/main.go -nt .tools/bin/paced ] || [ bench/loadgen/go.sum -nt .tools/bin/paced ] || [ bench/loadgen/go.mod -nt .tools/bin/paced ]; then
  say "building the paced load generator (bench/loadgen) with go build"
  (cd bench/loadgen && GOFLAGS=-mod=mod go build -o ../../.tools/bin/paced .) >&2
fi
if ! command -v h2load > /dev/null; then
  . "$(dirname "$0")/lib/apt.sh"
  apt_install install-loadgen nghttp2-client
fi
