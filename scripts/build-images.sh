#!/usr/bin/env bash
# Build, locally and without an image registry, the images the tests and the demo use.
#   scripts/build-images.sh [test|ml|base|all]     (default: all; base: only the Debian python base)
# Each image is skipped when it already exists (the example: with the same source), unless FORCE=1.
# PUBLIC_BASE (default python:3.11-slim) is tried first for the ML image; OFFLINE=1 skips
# that pull and goes straight to the local Debian base + wheels downloaded on the host.
set -euo pipefail

NAME=build-images
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # ROOT, say, die, have_image, size_of, done_msg
TARGET="${1:-all}"
FORCE="${FORCE:-0}"
OFFLINE="${OFFLINE:-0}"
PUBLIC_BASE="${PUBLIC_BASE:-python:3.11-slim}"
BUSYBOX_IMAGE=dood-test-busybox:latest
BASE_IMAGE=dood-python-base:bookworm
ML_IMAGE=dood-ml-example:latest
ML_DIR="$ROOT/images/ml-example"
export DOCKER_BUILDKIT=0

exists() { [[ "$FORCE" != 1 ]] && have_image "$1"; }

WORK="$(mktemp -d /var/tmp/dood-build.XXXXXX)"
cleanup() {  # unmount leftovers (a failed debootstrap may leave /proc mounted) before deleting
  awk -v p="$WORK/" 'index($2, p) == 1 {print $2}' /proc/mounts | sort -r |
    while read -r m; do umount -l "$m" || true; done
  rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

build_busybox() {
  if exists "$BUSYBOX_IMAGE"; then say "$BUSYBOX_IMAGE: exists, skipped"; return; fi
  local t0 a dir="$WORK/busybox"
  t0=$(date +%s)
  say "$BUSYBOX_IMAGE: importing a rootfs of Debian's static busybox with one link per applet"
  # `ldd` fails on a static binary; a dynamic /bin/busybox (package busybox) will not do.
  if [[ ! -x /bin/busybox ]] || ldd /bin/busybox >/dev/null 2>&1; then apt_install busybox-static; fi
  mkdir -p "$dir/bin" "$dir/tmp" "$dir/usr"
  chmod 1777 "$dir/tmp"
  ln -s ../bin "$dir/usr/bin"  # so #!/usr/bin/env works
  cp /bin/busybox "$dir/bin/busybox"
  for a in $(/bin/busybox --list); do [[ -e "$dir/bin/$a" ]] || ln -s busybox "$dir/bin/$a"; done
  tar -C "$dir" --numeric-owner -c . | docker import --change 'CMD ["sh"]' - "$BUSYBOX_IMAGE" >/dev/null
  done_msg "$BUSYBOX_IMAGE" "$t0"
}

build_python_base() {
  if exists "$BASE_IMAGE"; then say "$BASE_IMAGE: exists, skipped"; return; fi
  local t0 dir="$WORK/rootfs"
  t0=$(date +%s)
  say "$BASE_IMAGE: debootstrap --variant=minbase bookworm with python3 (takes about a minute)"
  command -v debootstrap >/dev/null || apt_install debootstrap
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$dir" \
    >"$dir.log" 2>&1 || { tail -n 20 "$dir.log" >&2; die "debootstrap failed"; }
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  tar -C "$dir" --numeric-owner -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' - "$BASE_IMAGE" >/dev/null
  done_msg "$BASE_IMAGE" "$t0"
}

download_wheels() {
  local arch p plats=()
  arch="$(uname -m)"
  case "$arch" in
    x86_64 | aarch64) for p in manylinux2014 manylinux_2_17 manylinux_2_28; do plats+=(--platform "${p}_$arch"); done ;;
    *) die "no wheel platform known for $arch" ;;
  esac
  say "$ML_IMAGE: downloading cp311 $arch wheels on the host into images/ml-example/wheels/"
  python3 -m pip download -q --disable-pip-version-check --only-binary=:all: --python-version 3.11 \
    "${plats[@]}" -d "$ML_DIR/wheels" -r "$ML_DIR/requirements.txt" || die "pip download failed"
}

ml_source_hash() {  # the example's own files (not the downloaded wheels): a change rebuilds the image
  (cd "$ML_DIR" && find . -path ./wheels -prune -o -type f -print | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-16
}

build_ml() {
  local hash
  hash=$(ml_source_hash)
  if exists "$ML_IMAGE" && [[ $(docker image inspect -f '{{index .Config.Labels "dood.source-hash"}}' "$ML_IMAGE") == "$hash" ]]; then
    say "$ML_IMAGE: up to date, skipped"; return
  fi
  local t0 base out="$WORK/ml-build.log"
  t0=$(date +%s)
  if docker image inspect "$PUBLIC_BASE" >/dev/null 2>&1 ||
    { [[ "$OFFLINE" != 1 ]] && timeout 30 docker pull -q "$PUBLIC_BASE" >/dev/null 2>&1; }; then
    base="$PUBLIC_BASE"
  else
    say "$ML_IMAGE: $PUBLIC_BASE is not available$([[ $OFFLINE == 1 ]] && echo ' (OFFLINE=1)'); using $BASE_IMAGE + host wheels"
    build_python_base
    download_wheels
    base="$BASE_IMAGE"
    t0=$(date +%s)  # time the image build itself; the steps above report their own time
  fi
  say "$ML_IMAGE: docker build images/ml-example (BASE_IMAGE=$base)"
  docker build --build-arg "BASE_IMAGE=$base" --label "dood.source-hash=$hash" -t "$ML_IMAGE" "$ML_DIR" >"$out" 2>&1 ||
    { tail -n 30 "$out" >&2; die "docker build of $ML_IMAGE failed"; }
  done_msg "$ML_IMAGE" "$t0"
}

docker info >/dev/null 2>&1 || die "no Docker engine answers: run scripts/ensure-docker.sh first"
case "$TARGET" in
  test) build_busybox ;;
  ml) build_ml ;;
  base) build_python_base ;;
  all) build_busybox; build_ml ;;
  *) die "usage: $0 [test|ml|base|all]" ;;
esac
