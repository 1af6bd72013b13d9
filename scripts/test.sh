#!/usr/bin/env bash
# The test command (npm test runs bootstrap first): typecheck, build the sample tenants'
# bundles (opa check + opa test + opa build -t wasm), then every test file with node's
# built-in test runner. Integration tests start their own servers on random loopback ports
# (the local EVM chain of the anchoring tests runs in-process, from the npm dev dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== tools for the tests (helm and promtool for the chart tests, nats-server for distribution, SoftHSM2 for the PKCS#11 signer tests, redis-server for shared credential state)"
bash scripts/install-helm.sh
bash scripts/install-nats.sh
bash scripts/install-softhsm.sh
bash scripts/install-redis.sh
bash scripts/install-promtool.sh

echo "== typecheck"
npx tsc -p tsconfig.json --noEmit

echo "== build sample bundles"
npx tsx sidecar/src/cli/main.ts bundle build --all

echo "== tests"
mapfile -t files < <(find test -name '*.test.ts' -not -path '*/node_modules/*' | sort)
if [ "$#" -gt 0 ]; then files=("$@"); fi
# Every file's temporary directories (logs, stores, keys, the servers' data) go under one
# directory of the run's own, removed when the run ends, even when a test process was killed.
run_tmp="$(mktemp -d "${TMPDIR:-/tmp}/pavilion-tests-XXXXXX")"
trap 'rm -rf "$run_tmp"' EXIT
export TMPDIR="$run_tmp"
# A hard limit: a regression that blocks an event loop must fail the run, not hang CI.
timeout --signal=KILL 1500 node --import tsx --test --test-reporter=spec "${files[@]}"
