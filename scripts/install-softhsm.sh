#!/usr/bin/env bash
# Installs SoftHSM2 (a software PKCS#11 token) and OpenSC's pkcs11-tool, which the audit
# log's PKCS#11 signer tests run against. Does nothing (quietly) when both are there.
# Needs apt (Debian/Ubuntu) and root, or sudo; elsewhere install the two packages yourself.
#
#   bash scripts/install-softhsm.sh     # then: softhsm2-util --version
set -euo pipefail
say() { printf 'install-softhsm: %s\n' "$*" >&2; }

module_present() {
  for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so; do
    [ -e "$m" ] && return 0
  done
  return 1
}

if command -v softhsm2-util >/dev/null 2>&1 && command -v pkcs11-tool >/dev/null 2>&1 && module_present; then
  exit 0
fi
. "$(dirname "$0")/lib/apt.sh"
apt_install install-softhsm softhsm2 opensc
module_present || { say "softhsm2 installed but libsofthsm2.so was not found"; exit 1; }
