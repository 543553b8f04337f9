# Shared by scripts/*.sh and benchmarks/run.sh: source it after setting NAME (the prefix of every message).
#
#   NAME=build-images
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"       # from scripts/; benchmarks/run.sh: ../scripts/lib.sh
#
# It defines ROOT (the repository), say/die (messages on stdout / errors on stderr, then exit 1), section (a
# heading between long steps) and the image helpers the build scripts share.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NAME="${NAME:-$(basename "$0" .sh)}"

say() { printf '%s: %s\n' "$NAME" "$*"; }
die() { printf '%s: ERROR: %s\n' "$NAME" "$*" >&2; exit 1; }
section() { printf '\n== %s\n' "$*"; }

have_image() { docker image inspect "$1" >/dev/null 2>&1; }
size_of() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1 / 1e6}'; }
done_msg() { say "$1: built in $(($(date +%s) - $2))s ($(size_of "$1"))"; }  # done_msg IMAGE START_EPOCH
