#!/usr/bin/env bash
# The benchmark command (npm run bench runs bootstrap first): the servers the named
# benchmarks start - nats-server for rollout, audit and soak, SoftHSM2 for audit's checkpoint
# signing (audit skips that case, saying so, when it cannot be installed) - then bench/run.ts
# with the names and flags given. extauthz builds its load generators itself.
set -euo pipefail
cd "$(dirname "$0")/.."
for arg in "$@"; do
  case "$arg" in
    rollout|soak) bash scripts/install-nats.sh ;;
    audit)
      bash scripts/install-nats.sh
      bash scripts/install-softhsm.sh || echo "bench: SoftHSM2 could not be installed; the audit benchmark skips its HSM signing case" >&2
      ;;
  esac
done
exec npx tsx bench/run.ts "$@"
