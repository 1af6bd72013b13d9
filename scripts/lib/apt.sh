# Sourced by the install scripts: apt_install <purpose> <package>... installs Debian packages with
# apt-get (as root, or through sudo), updating the package lists once if the first try fails.
apt_install() {
  local purpose="$1"; shift
  if ! command -v apt-get >/dev/null 2>&1; then
    printf '%s: apt-get is not available; install %s with your package manager\n' "$purpose" "$*" >&2
    return 1
  fi
  local sudo=""
  if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      printf '%s: installing %s needs root (or sudo)\n' "$purpose" "$*" >&2; return 1
    fi
  fi
  printf '%s: installing %s with apt-get\n' "$purpose" "$*" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2 \
    || { $sudo apt-get update >&2 && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2; }
}
