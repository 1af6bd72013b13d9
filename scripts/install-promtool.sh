#!/usr/bin/env bash
# Installs promtool (Prometheus' rule checker and rule unit-test runner) into the
# project-local .tools/bin, for the chart test that evaluates the example chart's alerts the
# way Prometheus does. Does nothing when the wanted version is there. Built from source with
# `go install` from the Go module proxy (Prometheus 3.x publishes its Go module as v0.3xx.y:
# v0.316.0 is Prometheus 3.16.0); the first build downloads and compiles for several minutes.
#
#   bash scripts/install-promtool.sh     # then: .tools/bin/promtool --version
set -euo pipefail
cd "$(dirname "$0")/.."

PROMETHEUS_MODULE_VERSION="0.316.0"
say() { printf 'install-promtool: %s\n' "$*" >&2; }
is_wanted() { "$1" --version 2>/dev/null | grep -q "^promtool, version $PROMETHEUS_MODULE_VERSION "; }

if [ -x .tools/bin/promtool ] && is_wanted .tools/bin/promtool; then
  exit 0
fi
. scripts/lib/go-tool.sh
# release builds stamp their version with -ldflags; a plain `go install` reports none
go_install_tool install-promtool "the chart's alert tests" "github.com/prometheus/prometheus/cmd/promtool@v$PROMETHEUS_MODULE_VERSION" \
  "-X github.com/prometheus/common/version.Version=$PROMETHEUS_MODULE_VERSION"
if ! is_wanted .tools/bin/promtool; then
  say "built .tools/bin/promtool but it reports '$(.tools/bin/promtool --version 2>&1 | head -1)'"
  exit 1
fi
say "installed $(.tools/bin/promtool --version 2>&1 | head -1) at .tools/bin/promtool"
