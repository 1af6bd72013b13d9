# Build a Go tool into the project-local .tools/bin with `go install` from the Go module proxy
# (release binaries cannot be downloaded on the project's machines). Sourced by the install
# scripts; run from the repository root.
#
#   go_install_tool <script name> <what needs it> <package@version> [ldflags] [hint]
#
# Without Go it says what needs the tool and how to go on (`hint`: another way, such as the
# tool on PATH), and returns 1.
go_install_tool() {
  local who="$1" needed_for="$2" package="$3" ldflags="${4:-}" hint="${5:-}"
  if ! command -v go >/dev/null 2>&1; then
    printf '%s: %s is needed for %s, and Go is not installed to build it.\n' "$who" "$package" "$needed_for" >&2
    printf '%s: install Go (https://go.dev/doc/install)%s, then run again.\n' "$who" "${hint:+, or $hint}" >&2
    return 1
  fi
  printf '%s: building %s with go install (a few minutes the first time)\n' "$who" "$package" >&2
  mkdir -p .tools/bin
  if [ -n "$ldflags" ]; then
    GOBIN="$PWD/.tools/bin" GOFLAGS=-mod=mod go install -ldflags "$ldflags" "$package" >&2
  else
    GOBIN="$PWD/.tools/bin" GOFLAGS=-mod=mod go install "$package" >&2
  fi
}
