#!/usr/bin/env bash
# The compose stack's Airflow image with the FAB auth manager (per-team access, docs/compose.md):
#   scripts/build-fab-image.sh          # after scripts/compose-setup.sh; builds ${AIRFLOW_IMAGE}-fab
# Then in .env: AIRFLOW_IMAGE=<that name> and
# AIRFLOW_AUTH_MANAGER=airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager; `docker-compose up -d`.
# Offline like build-compose-images.sh: the wheels are downloaded on the host (cached in var/compose/wheels-fab/),
# pinned to the base image's own versions except python-dateutil (FAB needs < 3). An official base
# (apache/airflow) already has the provider: it is only tagged.
set -euo pipefail

NAME=build-fab-image
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # ROOT, say, die, have_image, done_msg
BASE="${AIRFLOW_IMAGE:-dood-airflow:3.3.2}"
TARGET="${FAB_IMAGE:-${BASE}-fab}"
DIR="$ROOT/images/airflow-fab"
WHEELS="$ROOT/var/compose/wheels-fab"
export DOCKER_BUILDKIT=0

have_image "$BASE" || die "$BASE is missing: run scripts/compose-setup.sh (or scripts/build-compose-images.sh) first"
run_in_base() { docker run --rm --entrypoint "$1" "$BASE" "${@:2}"; }
if run_in_base python -c 'import airflow.providers.fab' >/dev/null 2>&1; then
  docker tag "$BASE" "$TARGET"
  say "$BASE has the FAB provider already: tagged $TARGET"; exit 0
fi
base_id="$(docker image inspect -f '{{.Id}}' "$BASE")"
if [[ "${FORCE:-0}" != 1 ]] && [[ "$(docker image inspect -f '{{index .Config.Labels "dood.fab-base"}}' "$TARGET" 2>/dev/null)" == "$base_id" ]]; then
  say "$TARGET: up to date (built on $BASE ${base_id:7:12}), skipped"; exit 0
fi

t0=$(date +%s)
WORK="$(mktemp -d /var/tmp/dood-fab-build.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
pyver="$(run_in_base python -c 'import platform; print(platform.python_version())')"
[[ "$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')" == "${pyver%.*}" ]] ||
  die "the host's python3 is not Python ${pyver%.*} like $BASE: run this with a python3 ${pyver%.*} first on PATH"
run_in_base pip list --format=freeze --disable-pip-version-check --exclude-editable | grep -v -i -E '^(python-dateutil|dood-airflow)==' \
  >"$WORK/constraints.txt"
arch="$(uname -m)"
plats=()
for p in manylinux2014 manylinux_2_17 manylinux_2_28; do plats+=(--platform "${p}_$arch"); done
want="$({ echo "$pyver"; cat "$WORK/constraints.txt" "$DIR/requirements.txt"; } | sha256sum | cut -c1-16)"
if [[ ! -f "$WHEELS/.stamp" || "$(cat "$WHEELS/.stamp")" != "$want" ]]; then
  say "FAB wheels: downloading on the host into ${WHEELS#"$ROOT"/}/ (Python $pyver $arch)"
  rm -rf "$WHEELS" && mkdir -p "$WHEELS"
  python3 -m pip download -q --disable-pip-version-check --only-binary=:all: --python-version "$pyver" "${plats[@]}" \
    -c "$WORK/constraints.txt" -d "$WHEELS" -r "$DIR/requirements.txt" >"$WORK/download.log" 2>&1 ||
    { grep -v '^WARNING: Location' "$WORK/download.log" | tail -n 20 >&2; die "pip download of the FAB provider failed"; }
  echo "$want" >"$WHEELS/.stamp"
fi
mkdir -p "$WORK/ctx/wheels"
cp "$DIR/Dockerfile" "$WORK/ctx/"
# Only the wheels the base lacks: the others are installed already, at the same versions (the constraints).
python3 - "$WORK/constraints.txt" "$WHEELS" "$WORK/ctx/wheels" <<'PYEOF'
import re, shutil, sys
from pathlib import Path
norm = lambda name: re.sub(r"[-_.]+", "_", name).lower()
have = {norm(n) + "-" + v for n, v in (line.strip().split("==", 1) for line in open(sys.argv[1]) if "==" in line)}
for wheel in Path(sys.argv[2]).glob("*.whl"):
    name, version = wheel.name.split("-")[:2]
    if norm(name) + "-" + version not in have:
        shutil.copy(wheel, sys.argv[3])
PYEOF
cp "$DIR/requirements.txt" "$WORK/ctx/wheels/"
say "$TARGET: docker build images/airflow-fab on $BASE ($(find "$WORK/ctx/wheels" -name '*.whl' | wc -l) new wheels)"
docker build --build-arg "BASE_IMAGE=$BASE" --label "dood.fab-base=$base_id" -t "$TARGET" "$WORK/ctx" \
  >"$WORK/build.log" 2>&1 || { tail -n 30 "$WORK/build.log" >&2; die "docker build of $TARGET failed"; }
done_msg "$TARGET" "$t0"
say "next, in .env: AIRFLOW_IMAGE=$TARGET and AIRFLOW_AUTH_MANAGER=airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager; then docker-compose up -d"
