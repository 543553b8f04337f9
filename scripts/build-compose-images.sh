#!/usr/bin/env bash
# Build, locally, the images docker-compose.yml runs (the ML step image comes from scripts/build-images.sh).
#   scripts/build-compose-images.sh [airflow|postgres|redis|mlflow|all]     (default: all, redis and mlflow included)
#
# - AIRFLOW_IMAGE (default dood-airflow:3.3.2): images/airflow/Dockerfile on AIRFLOW_BASE
#   (default apache/airflow:3.3.2-python3.11) when it can be pulled; otherwise (no registry, or OFFLINE=1) on
#   the local Debian base dood-python-base:bookworm with the Airflow wheels downloaded on the host.
#   Rebuilt when the plugin, pyproject.toml or images/airflow/ changed (a hash kept as an image label).
# - Postgres: the public POSTGRES_PUBLIC (default postgres:16) when it can be pulled; otherwise
#   dood-postgres:15 from images/postgres/ (Debian's postgresql package).
# - Redis (the broker of `--profile celery`): REDIS_PUBLIC (default redis:7.2-bookworm) when it can be pulled;
#   otherwise dood-redis:7 from images/redis/ on the local base, with Debian's redis-server .deb files fetched
#   by the host's apt (resolved against the base's dpkg status) and built with --network none.
# - MLFLOW_IMAGE (default dood-mlflow:3.17.2), the tracking server: images/mlflow/Dockerfile on MLFLOW_BASE
#   (default the local dood-python-base:bookworm) with the wheels of images/mlflow/requirements.txt and ui.txt
#   downloaded on the host (cached in var/compose/mlflow-wheels/). Rebuilt when images/mlflow/ changed.
# Skips what is up to date unless FORCE=1. Writes the image names to use into var/compose/images.env
# (KEY=VALUE lines, read by scripts/compose-e2e.sh and tests/e2e).
set -euo pipefail

NAME=build-compose-images
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # ROOT, say, die, have_image, size_of, done_msg
TARGET="${1:-all}"
FORCE="${FORCE:-0}"
OFFLINE="${OFFLINE:-0}"
AIRFLOW_BASE="${AIRFLOW_BASE:-apache/airflow:3.3.2-python3.11}"
AIRFLOW_IMAGE="${AIRFLOW_IMAGE:-dood-airflow:3.3.2}"
POSTGRES_PUBLIC="${POSTGRES_PUBLIC:-postgres:16}"
POSTGRES_LOCAL=dood-postgres:15
REDIS_PUBLIC="${REDIS_PUBLIC:-redis:7.2-bookworm}"
REDIS_LOCAL=dood-redis:7
MLFLOW_IMAGE="${MLFLOW_IMAGE:-dood-mlflow:3.17.2}"
BASE_IMAGE=dood-python-base:bookworm
AIRFLOW_DIR="$ROOT/images/airflow"
MLFLOW_DIR="$ROOT/images/mlflow"
MLFLOW_BASE="${MLFLOW_BASE:-dood-python-base:bookworm}"
MLFLOW_WHEELS="$ROOT/var/compose/mlflow-wheels"   # cache of the tracking server's wheels (about 70 MB)
STATE="$ROOT/var/compose"
WHEELS="$STATE/wheels"      # cache of the offline Airflow wheels (about 65 MB, downloaded once)
ENV_FILE="$STATE/images.env"
export DOCKER_BUILDKIT=0

# The public image, if present or pullable (skipped with OFFLINE=1); fails fast where no registry answers.
can_use_public() { have_image "$1" || { [[ "$OFFLINE" != 1 ]] && timeout 120 docker pull -q "$1" >/dev/null 2>&1; }; }

WORK="$(mktemp -d /var/tmp/dood-compose-build.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$STATE"

# dood-airflow's extras in the offline Airflow image: [mlflow], MLflow's client on the workers, since
# config/compose.yaml turns `tracking: mlflow:` on (dood.lifecycle.mlflow_runs).
DOOD_EXTRAS="mlflow"

source_hash() {  # everything that ends up in the Airflow image
  { echo "extras=$DOOD_EXTRAS"
    (cd "$ROOT" && find src/dood pyproject.toml images/airflow -type f \
      ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum); } | sha256sum | cut -c1-16
}

build_dood_wheel() {  # -> $WORK/dist/dood_airflow-*.whl
  say "building the dood-airflow wheel (pip wheel --no-deps .)"
  python3 -m pip wheel -q --disable-pip-version-check --no-deps -w "$WORK/dist" "$ROOT" >"$WORK/wheel.log" 2>&1 ||
    { tail -n 20 "$WORK/wheel.log" >&2; die "pip wheel of dood-airflow failed"; }
  rm -rf "$ROOT/build"  # setuptools' scratch folder
}

# The `pip download` of wheels for IMAGE's Python on this host's architecture, into PIP_DOWNLOAD (an array, no
# -d yet) and PYVER; CONSTRAINTS: the project's virtualenv versions (tested there), where it exists. pip evaluates
# environment markers (python_full_version < "3.11.3") with the Python running it: the host's python3 must be the
# image's minor version. Shared by the Airflow and the MLflow wheels.
pip_download_for() {
  local image="$1" arch p plats=()
  PYVER="$(docker run --rm --network none --entrypoint python3 "$image" -c 'import platform; print(platform.python_version())')" ||
    die "cannot run python3 in $image"
  [[ "$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')" == "${PYVER%.*}" ]] ||
    die "the host's python3 is not Python ${PYVER%.*} like $image: run this with a python3 ${PYVER%.*} first on PATH"
  arch="$(uname -m)"
  case "$arch" in
    x86_64 | aarch64) for p in manylinux2014 manylinux_2_17 manylinux_2_28; do plats+=(--platform "${p}_$arch"); done ;;
    *) die "no wheel platform known for $arch" ;;
  esac
  PIP_DOWNLOAD=(python3 -m pip download -q --disable-pip-version-check --only-binary=:all: --python-version "$PYVER"
    "${plats[@]}")
  CONSTRAINTS=()
  if [[ -x "$ROOT/.venv/bin/pip" ]]; then
    "$ROOT/.venv/bin/pip" freeze --exclude-editable --disable-pip-version-check >"$WORK/constraints.txt"
    CONSTRAINTS=(-c "$WORK/constraints.txt")
  fi
}

# wheels_cached DIR WANT WHAT: true (and says so) when DIR holds the wheels of WANT (a hash of what is asked
# for, kept in DIR/.stamp): downloaded again only when that changes, or with FORCE=1.
wheels_cached() {
  [[ "$FORCE" != 1 && -f "$1/.stamp" && "$(cat "$1/.stamp")" == "$2" ]] || return 1
  say "$3 wheels: up to date in ${1#"$ROOT"/}/ ($(find "$1" -name '*.whl' | wc -l) wheels)"
}

# wheels_download DIR WANT WHAT SIZE LOG CMD...: an empty DIR, CMD run (its output in LOG, its tail shown when
# it fails), then DIR's stamp.
wheels_download() {
  local dir="$1" want="$2" what="$3" size="$4" log="$5" t0
  shift 5
  t0=$(date +%s)
  say "$what wheels: downloading Python $PYVER $(uname -m) wheels on the host into ${dir#"$ROOT"/}/ (about $size)"
  rm -rf "$dir" && mkdir -p "$dir"
  "$@" >"$log" 2>&1 || { grep -v '^WARNING: Location' "$log" | tail -n 20 >&2; die "pip download of the $what wheels failed"; }
  echo "$want" >"$dir/.stamp"
  say "$what wheels: $(find "$dir" -name '*.whl' | wc -l) wheels in $(($(date +%s) - t0))s"
}

download_wheels() {  # Airflow + what images/airflow/requirements.txt and dood-airflow need, for the base's Python
  local want
  pip_download_for "$BASE_IMAGE"
  want="$({ echo "$PYVER extras=$DOOD_EXTRAS"; cat "$AIRFLOW_DIR/requirements.txt"; python3 - "$WORK"/dist/dood_airflow-*.whl <<'PYEOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    meta = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    print("\n".join(line for line in wheel.read(meta).decode().splitlines() if line.startswith("Requires-Dist:")))
PYEOF
  } | sha256sum | cut -c1-16)"
  wheels_cached "$WHEELS" "$want" Airflow && return
  wheels_download "$WHEELS" "$want" Airflow "75 MB" "$WORK/download.log" airflow_pip_download
}

airflow_pip_download() {
  "${PIP_DOWNLOAD[@]}" "${CONSTRAINTS[@]}" -d "$WHEELS" -r "$AIRFLOW_DIR/requirements.txt" \
    "$(echo "$WORK"/dist/dood_airflow-*.whl)[$DOOD_EXTRAS]" &&
    rm -f "$WHEELS"/dood_airflow-*.whl  # installed in its own layer, so a plugin change does not redo the venv
}

build_airflow() {
  local t0 base hash current ctx="$WORK/airflow-context" out="$WORK/airflow-build.log"
  hash="$(source_hash)"
  current="$(docker image inspect -f '{{index .Config.Labels "dood.source-hash"}}' "$AIRFLOW_IMAGE" 2>/dev/null || true)"
  if [[ "$FORCE" != 1 && "$current" == "$hash" ]]; then
    say "$AIRFLOW_IMAGE: up to date (source hash $hash), skipped"; return
  fi
  t0=$(date +%s)
  mkdir -p "$ctx/wheels"
  cp "$AIRFLOW_DIR"/* "$ctx/"
  build_dood_wheel
  cp -r "$WORK/dist" "$ctx/dist"
  if can_use_public "$AIRFLOW_BASE"; then
    base="$AIRFLOW_BASE"
  else
    say "$AIRFLOW_IMAGE: $AIRFLOW_BASE is not available$([[ $OFFLINE == 1 ]] && echo ' (OFFLINE=1)'); using $BASE_IMAGE + host wheels"
    have_image "$BASE_IMAGE" || bash "$ROOT/scripts/build-images.sh" base ||
      die "$BASE_IMAGE is missing and could not be built (scripts/build-images.sh base)"
    download_wheels
    cp "$WHEELS"/*.whl "$ctx/wheels/"
    base="$BASE_IMAGE"
    t0=$(date +%s)  # time the image build itself; the download reports its own time
  fi
  say "$AIRFLOW_IMAGE: docker build images/airflow (BASE_IMAGE=$base)"
  docker build --build-arg "BASE_IMAGE=$base" --label "dood.source-hash=$hash" --label "dood.base-image=$base" \
    -t "$AIRFLOW_IMAGE" "$ctx" >"$out" 2>&1 || { tail -n 30 "$out" >&2; die "docker build of $AIRFLOW_IMAGE failed"; }
  done_msg "$AIRFLOW_IMAGE" "$t0"
}

POSTGRES_IMAGE_CHOSEN=""
build_postgres() {
  if [[ -n "${POSTGRES_IMAGE:-}" ]]; then  # chosen by the user: only check it is there
    have_image "$POSTGRES_IMAGE" || can_use_public "$POSTGRES_IMAGE" || die "POSTGRES_IMAGE=$POSTGRES_IMAGE is not available"
    POSTGRES_IMAGE_CHOSEN="$POSTGRES_IMAGE"; say "$POSTGRES_IMAGE: given by POSTGRES_IMAGE"; return
  fi
  if can_use_public "$POSTGRES_PUBLIC"; then
    POSTGRES_IMAGE_CHOSEN="$POSTGRES_PUBLIC"; say "$POSTGRES_PUBLIC: available"; return
  fi
  POSTGRES_IMAGE_CHOSEN="$POSTGRES_LOCAL"
  if [[ "$FORCE" != 1 ]] && have_image "$POSTGRES_LOCAL"; then say "$POSTGRES_LOCAL: exists, skipped"; return; fi
  local t0 out="$WORK/postgres-build.log"
  t0=$(date +%s)
  say "$POSTGRES_LOCAL: $POSTGRES_PUBLIC is not available; docker build images/postgres (BASE_IMAGE=$BASE_IMAGE, apt inside)"
  have_image "$BASE_IMAGE" || bash "$ROOT/scripts/build-images.sh" base ||
    die "$BASE_IMAGE is missing and could not be built (scripts/build-images.sh base)"
  docker build --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$POSTGRES_LOCAL" "$ROOT/images/postgres" >"$out" 2>&1 ||
    { tail -n 30 "$out" >&2; die "docker build of $POSTGRES_LOCAL failed"; }
  done_msg "$POSTGRES_LOCAL" "$t0"
}

# host_debs DIR BASE PACKAGE...: into DIR, the host's .deb files of PACKAGE and of every dependency BASE lacks,
# resolved by the host's apt against BASE's own dpkg status (so versions match BASE's libraries), fetched with
# `apt-get download` on the host (the Debian mirror the host's apt uses, or its cache): the image build then
# installs them with dpkg and needs no network. BASE must be the host's Debian release (bookworm).
host_debs() {
  local dir="$1" base="$2" status="$WORK/base-dpkg-status" plan
  shift 2
  command -v apt-get >/dev/null || die "apt-get is not on this host: the offline build takes Debian packages from the host's apt"
  local release_of='. /etc/os-release && echo "$ID $VERSION_CODENAME"' host_release base_release
  host_release="$(sh -c "$release_of" 2>/dev/null || true)"
  base_release="$(docker run --rm --network none --entrypoint sh "$base" -c "$release_of" 2>/dev/null || true)"
  [[ -n "$host_release" && "$host_release" == "$base_release" ]] ||
    die "the host ($host_release) is not the release of $base ($base_release): its apt cannot fetch packages for it; build $REDIS_LOCAL where a registry answers (REDIS_PUBLIC) or on a $base_release host"
  docker run --rm --network none --entrypoint cat "$base" /var/lib/dpkg/status >"$status" ||
    die "cannot read the dpkg status of $base"
  resolve() {  # the packages (name=version) apt would install on top of BASE
    apt-get -s -o Dir::State::status="$status" -o Debug::NoLocking=1 install --no-install-recommends "$@" 2>"$WORK/apt.err" |
      sed -n 's/^Inst \([^ ]*\) (\([^ ]*\) .*/\1=\2/p'
  }
  plan="$(resolve "$@" || true)"
  if [[ -z "$plan" ]] || ! (mkdir -p "$dir" && cd "$dir" && xargs apt-get download -qq <<<"$plan" >"$WORK/apt-download.log" 2>&1); then
    say "the host's package lists look stale: apt-get update"
    [[ $(id -u) -eq 0 ]] || die "cannot resolve $* on the host and cannot refresh apt's lists (not root): apt-get update"
    apt-get -qq -o DPkg::Lock::Timeout=300 update >/dev/null || die "apt-get update failed"
    plan="$(resolve "$@" || true)"
    [[ -n "$plan" ]] || { cat "$WORK/apt.err" >&2; die "the host's apt cannot resolve $* for $base"; }
    rm -f "$dir"/*.deb
    (cd "$dir" && xargs apt-get download -qq <<<"$plan" >"$WORK/apt-download.log" 2>&1) ||
      { tail -n 20 "$WORK/apt-download.log" >&2; die "apt-get download of $(tr '\n' ' ' <<<"$plan") failed"; }
  fi
  say "host packages for $base: $(tr '\n' ' ' <<<"$plan")"
}

REDIS_IMAGE_CHOSEN=""
build_redis() {
  if [[ -n "${REDIS_IMAGE:-}" ]]; then  # chosen by the user: only check it is there
    have_image "$REDIS_IMAGE" || can_use_public "$REDIS_IMAGE" || die "REDIS_IMAGE=$REDIS_IMAGE is not available"
    REDIS_IMAGE_CHOSEN="$REDIS_IMAGE"; say "$REDIS_IMAGE: given by REDIS_IMAGE"; return
  fi
  if can_use_public "$REDIS_PUBLIC"; then
    REDIS_IMAGE_CHOSEN="$REDIS_PUBLIC"; say "$REDIS_PUBLIC: available"; return
  fi
  REDIS_IMAGE_CHOSEN="$REDIS_LOCAL"
  if [[ "$FORCE" != 1 ]] && have_image "$REDIS_LOCAL"; then say "$REDIS_LOCAL: exists, skipped"; return; fi
  local t0 out="$WORK/redis-build.log" ctx="$WORK/redis-context"
  t0=$(date +%s)
  say "$REDIS_LOCAL: $REDIS_PUBLIC is not available; docker build images/redis (BASE_IMAGE=$BASE_IMAGE, Debian's redis-server from the host's apt, no network in the build)"
  have_image "$BASE_IMAGE" || bash "$ROOT/scripts/build-images.sh" base ||
    die "$BASE_IMAGE is missing and could not be built (scripts/build-images.sh base)"
  mkdir -p "$ctx"
  cp -r "$ROOT/images/redis/." "$ctx/"
  rm -f "$ctx"/debs/*.deb
  host_debs "$ctx/debs" "$BASE_IMAGE" redis-server
  docker build --network none --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$REDIS_LOCAL" "$ctx" >"$out" 2>&1 ||
    { tail -n 30 "$out" >&2; die "docker build of $REDIS_LOCAL failed"; }
  done_msg "$REDIS_LOCAL" "$t0"
}

mlflow_hash() {  # what ends up in the tracking server's image
  { echo "base=$MLFLOW_BASE"; (cd "$ROOT" && find images/mlflow -type f -print0 | sort -z | xargs -0 sha256sum); } |
    sha256sum | cut -c1-16
}

download_mlflow_wheels() {  # images/mlflow/requirements.txt (+ ui.txt, without dependencies) for MLFLOW_BASE's Python
  local want
  pip_download_for "$MLFLOW_BASE"
  want="$({ echo "$PYVER $(uname -m)"; cat "$MLFLOW_DIR/requirements.txt" "$MLFLOW_DIR/ui.txt"; } | sha256sum | cut -c1-16)"
  wheels_cached "$MLFLOW_WHEELS" "$want" MLflow && return
  wheels_download "$MLFLOW_WHEELS" "$want" MLflow "70 MB" "$WORK/mlflow-download.log" mlflow_pip_download
}

mlflow_pip_download() {  # the UI's files come from the full wheel, without its dependencies (images/mlflow/ui.txt)
  "${PIP_DOWNLOAD[@]}" "${CONSTRAINTS[@]}" -d "$MLFLOW_WHEELS" -r "$MLFLOW_DIR/requirements.txt" &&
    "${PIP_DOWNLOAD[@]}" --no-deps -d "$MLFLOW_WHEELS" -r "$MLFLOW_DIR/ui.txt"
}

build_mlflow() {
  local t0 hash current ctx="$WORK/mlflow-context" out="$WORK/mlflow-build.log"
  hash="$(mlflow_hash)"
  current="$(docker image inspect -f '{{index .Config.Labels "dood.source-hash"}}' "$MLFLOW_IMAGE" 2>/dev/null || true)"
  if [[ "$FORCE" != 1 && "$current" == "$hash" ]]; then
    say "$MLFLOW_IMAGE: up to date (source hash $hash), skipped"; return
  fi
  if ! have_image "$MLFLOW_BASE"; then
    [[ "$MLFLOW_BASE" == "$BASE_IMAGE" ]] || can_use_public "$MLFLOW_BASE" || die "MLFLOW_BASE=$MLFLOW_BASE is not available"
    have_image "$MLFLOW_BASE" || bash "$ROOT/scripts/build-images.sh" base ||
      die "$BASE_IMAGE is missing and could not be built (scripts/build-images.sh base)"
  fi
  download_mlflow_wheels
  t0=$(date +%s)
  mkdir -p "$ctx/wheels"
  cp "$MLFLOW_DIR"/* "$ctx/"
  cp "$MLFLOW_WHEELS"/*.whl "$ctx/wheels/"
  say "$MLFLOW_IMAGE: docker build images/mlflow (BASE_IMAGE=$MLFLOW_BASE, host wheels, no network in the build)"
  docker build --network none --build-arg "BASE_IMAGE=$MLFLOW_BASE" --label "dood.source-hash=$hash" \
    --label "dood.base-image=$MLFLOW_BASE" -t "$MLFLOW_IMAGE" "$ctx" >"$out" 2>&1 ||
    { tail -n 30 "$out" >&2; die "docker build of $MLFLOW_IMAGE failed"; }
  done_msg "$MLFLOW_IMAGE" "$t0"
}

write_env_file() {  # updates the keys chosen by this run, keeps the others (e.g. REDIS_IMAGE)
  local key value
  local -A values=()
  if [[ -f "$ENV_FILE" ]]; then
    while IFS='=' read -r key value; do
      if [[ "$key" =~ ^[A-Z_]+$ ]]; then values[$key]="$value"; fi
    done <"$ENV_FILE"
  fi
  values[AIRFLOW_IMAGE]="$AIRFLOW_IMAGE"
  values[MLFLOW_IMAGE]="$MLFLOW_IMAGE"
  if [[ -n "$POSTGRES_IMAGE_CHOSEN" ]]; then values[POSTGRES_IMAGE]="$POSTGRES_IMAGE_CHOSEN"; fi
  if [[ -n "$REDIS_IMAGE_CHOSEN" ]]; then values[REDIS_IMAGE]="$REDIS_IMAGE_CHOSEN"; fi
  {
    echo "# Written by scripts/build-compose-images.sh: the images docker-compose.yml should run here."
    for key in $(printf '%s\n' "${!values[@]}" | sort); do echo "$key=${values[$key]}"; done
  } >"$ENV_FILE"
  say "image names written to ${ENV_FILE#"$ROOT"/}"
}

docker info >/dev/null 2>&1 || die "no Docker engine answers: run scripts/ensure-docker.sh first"
case "$TARGET" in
  airflow) build_airflow ;;
  postgres) build_postgres ;;
  redis) build_redis ;;
  mlflow) build_mlflow ;;
  all) build_airflow; build_postgres; build_redis; build_mlflow ;;
  *) die "usage: $0 [airflow|postgres|redis|mlflow|all]" ;;
esac
write_env_file
