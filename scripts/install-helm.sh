#!/usr/bin/env bash
# Installs the Helm CLI v3.22.0 into the project-local .tools/bin, and does nothing (quietly)
# when a v3.22.x helm is already there or on PATH. Built from source with `go install`
# (Go 1.23+), because prebuilt release binaries cannot be downloaded on the project's
# machines; the first build takes a few minutes.
#
#   bash scripts/install-helm.sh     # then: .tools/bin/helm version
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_VERSION="3.22.0"
HELM_MINOR="${HELM_VERSION%.*}"          # 3.22
say() { printf 'install-helm: %s\n' "$*" >&2; }

# Prints e.g. "v3.22.0" for a working helm binary, nothing otherwise.
helm_version() { "$1" version --template '{{ .Version }}' 2>/dev/null || true; }
is_wanted() { case "$(helm_version "$1")" in "v$HELM_MINOR".*) return 0 ;; *) return 1 ;; esac; }

if [ -x .tools/bin/helm ] && is_wanted .tools/bin/helm; then
  exit 0
fi
if command -v helm >/dev/null 2>&1 && is_wanted "$(command -v helm)"; then
  # Make the project-local path work too, so tests only ever look at .tools/bin/helm.
  mkdir -p .tools/bin
  ln -sf "$(command -v helm)" .tools/bin/helm
  exit 0
fi

. scripts/lib/go-tool.sh
# helm's release builds stamp their version with -ldflags; a plain `go install` would report
# only "v3.22", so stamp it the same way.
go_install_tool install-helm "the chart tests" "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION" \
  "-X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
  "put helm v$HELM_MINOR.x on PATH"
if ! is_wanted .tools/bin/helm; then
  say "built .tools/bin/helm but it reports '$(helm_version .tools/bin/helm)', expected v$HELM_MINOR.x"
  exit 1
fi
say "installed $(helm_version .tools/bin/helm) at .tools/bin/helm"
