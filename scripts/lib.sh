# Shared by scripts/*.sh and benchmarks/run.sh: source it after setting NAME (the prefix of every message).
#
#   NAME=build-images
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"       # from scripts/; benchmarks/run.sh: ../scripts/lib.sh
#
# It defines ROOT (the repository), say/die (messages on stdout / errors on stderr, then exit 1), section (a
# heading between long steps), apt_install and the image helpers the build scripts share.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NAME="${NAME:-$(basename "$0" .sh)}"

say() { printf '%s: %s\n' "$NAME" "$*"; }
die() { printf '%s: ERROR: %s\n' "$NAME" "$*" >&2; exit 1; }
section() { printf '\n== %s\n' "$*"; }

# apt_install [apt-get option...] PACKAGE...: quiet and non-interactive, waiting up to 5 min for apt's lock;
# the package lists are refreshed only when the install needs it (a fresh machine's are stale).
apt_install() {
  [[ $(id -u) -eq 0 ]] || die "need root to apt-get install $*"
  local opts=(-qq -y -o DPkg::Lock::Timeout=300)
  export DEBIAN_FRONTEND=noninteractive
  apt-get "${opts[@]}" install "$@" >/dev/null 2>&1 || {
    apt-get "${opts[@]}" update >/dev/null && apt-get "${opts[@]}" install "$@" >/dev/null
  } || die "apt-get install $* failed"
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }
size_of() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1 / 1e6}'; }
done_msg() { say "$1: built in $(($(date +%s) - $2))s ($(size_of "$1"))"; }  # done_msg IMAGE START_EPOCH
