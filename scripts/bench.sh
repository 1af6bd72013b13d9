#!/usr/bin/env bash
# The benchmark command (npm run bench runs bootstrap first): the servers the benchmarks start
# (nats-server for rollout and audit, SoftHSM2 for audit's checkpoint signing, redis-server
# for credentials' shared state; extauthz builds its load generators itself), then
# bench/run.ts with the benchmark names and flags given.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-nats.sh
bash scripts/install-softhsm.sh
bash scripts/install-redis.sh
exec npx tsx bench/run.ts "$@"
