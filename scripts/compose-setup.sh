#!/usr/bin/env bash
# One step before `docker-compose up -d`, with or without a registry: builds the images (the public bases
# where a registry answers, local fallbacks where none does) and writes `.env` next to docker-compose.yml
# with everything compose needs: the data root, the engine's socket and its group, the image names, an admin
# password. The socket: DOOD_DOCKER_SOCKET, else the path of DOCKER_HOST=unix://..., else .env's, else
# /var/run/docker.sock; the group is read from that socket.
#   scripts/compose-setup.sh            # then: docker-compose up -d   (or: docker compose up -d)
# An existing .env keeps its values (password, ports, root); only the image names are refreshed. Written when
# missing: MLFLOW_PORT (5000, or a free port when 5000 is taken on 127.0.0.1) and DOOD_STEPS_NETWORK (the
# steps' network, <DOOD_STACK or the checkout's directory name>-steps: one per stack on a host).
# DOOD_ENV_FILE=path writes another file instead (then: docker-compose --env-file path up -d); the compose
# e2e test sets the stack up this way, so the quickstart's one step is what make test runs.
set -euo pipefail

NAME=compose-setup
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # ROOT, say, die
ENV_FILE="${DOOD_ENV_FILE:-$ROOT/.env}"
IMAGES_ENV="$ROOT/var/compose/images.env"

get() { [[ -f "$ENV_FILE" ]] && sed -n "s/^$1=//p" "$ENV_FILE" | tail -n 1 || true; }
put() {  # put KEY VALUE: set (or replace) one line of .env
  local tmp
  tmp=$(mktemp)
  { [[ -f "$ENV_FILE" ]] && grep -v "^$1=" "$ENV_FILE" || true; printf '%s=%s\n' "$1" "$2"; } >"$tmp"
  install -m 600 "$tmp" "$ENV_FILE" && rm -f "$tmp"
}

bash "$ROOT/scripts/ensure-docker.sh"
# The engine's socket, mounted into the two proxies, and its group (DOCKER_GID, the proxies' only privilege):
# the shell's DOOD_DOCKER_SOCKET, else the path of the shell's DOCKER_HOST=unix://..., else .env's
# DOOD_DOCKER_SOCKET, else /var/run/docker.sock. The group is read from that socket, never from another.
socket="${DOOD_DOCKER_SOCKET:-}"
gid=""
case "${DOCKER_HOST:-}" in
  "") ;;
  unix://*) socket="${socket:-${DOCKER_HOST#unix://}}" ;;
  *) # tcp://, ssh://: the socket is on another host; its path and group cannot be read from here
    gid="${DOCKER_GID:-$(get DOCKER_GID)}"
    [[ -n "$gid" ]] || die "DOCKER_HOST=$DOCKER_HOST is not a unix socket on this host: set DOOD_DOCKER_SOCKET (the socket's path on the engine's host) and DOCKER_GID (its group there: stat -c %g SOCKET) in $ENV_FILE" ;;
esac
socket="${socket:-$(get DOOD_DOCKER_SOCKET)}"
socket="${socket:-/var/run/docker.sock}"
[[ "$socket" == /* ]] || die "DOOD_DOCKER_SOCKET=$socket: give the absolute host path of the engine's unix socket"
if [[ -z "$gid" ]]; then
  [[ -S "$socket" ]] || die "DOOD_DOCKER_SOCKET=$socket is not a unix socket on this host: give the path of the engine's socket (rootless Docker: \$XDG_RUNTIME_DIR/docker.sock; docker context inspect shows it)"
  gid="$(stat -c %g "$socket")"
fi
put DOOD_DOCKER_SOCKET "$socket"
put DOCKER_GID "$gid"
DOCKER_BUILDKIT=0 bash "$ROOT/scripts/build-images.sh" ml
DOCKER_BUILDKIT=0 bash "$ROOT/scripts/build-compose-images.sh"
[[ -f "$IMAGES_ENV" ]] || die "$IMAGES_ENV was not written by scripts/build-compose-images.sh"

host_root=$(get DOOD_HOST_ROOT)
host_root=${host_root:-$ROOT/var/compose/dood}
mkdir -p "$host_root"
put DOOD_HOST_ROOT "$host_root"
# The certificate directories of docs/hosts.md: compose reads a path that starts with neither / nor . as a
# volume's name, so a relative one (var/certs, the docs' own) is written back as ./var/certs.
for key in DOOD_CERTS DOOD_UI_CERTS; do
  value=$(get "$key")
  case "$value" in
    "" | /* | ./* | ../* | "~"*) ;;
    *) put "$key" "./$value"; say "$key=$value in $ENV_FILE written as ./$value (compose would take it for a volume's name)" ;;
  esac
done
[[ -n "$(get _AIRFLOW_WWW_USER_PASSWORD)" ]] || put _AIRFLOW_WWW_USER_PASSWORD "$(python3 -c 'import secrets; print(secrets.token_urlsafe(12))')"
# The tracking server's port on 127.0.0.1: 5000 unless something listens there (another stack's), then a free one.
if [[ -z "$(get MLFLOW_PORT)" ]]; then
  mlflow_port="$(python3 - <<'PYEOF'
import socket
for port in (5000, 0):
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(probe.getsockname()[1])
        break
PYEOF
)"
  put MLFLOW_PORT "$mlflow_port"
  [[ "$mlflow_port" == 5000 ]] || say "127.0.0.1:5000 is taken: MLFLOW_PORT=$mlflow_port written to $ENV_FILE"
fi
# The steps' network, named after the stack so two stacks on one host never share it.
if [[ -z "$(get DOOD_STEPS_NETWORK)" ]]; then
  stack="$(get DOOD_STACK)"
  stack="${stack:-$(basename "$ROOT")}"
  stack="${stack,,}"
  put DOOD_STEPS_NETWORK "${stack//[^a-z0-9_.-]/-}-steps"
fi
while IFS='=' read -r key value; do
  [[ "$key" =~ ^[A-Z_]+$ ]] && put "$key" "$value"
done <"$IMAGES_ENV"

port=$(get AIRFLOW_API_PORT)
mlflow_port=$(get MLFLOW_PORT)
env_arg=""  # .env itself is git-ignored; another file is the user's to keep safe
[[ "$ENV_FILE" == "$ROOT/.env" ]] || env_arg=" --env-file $ENV_FILE"
kept="git-ignored"
[[ -z "$env_arg" ]] || kept="keep it out of version control"
say "wrote $ENV_FILE (mode 600: it holds the admin password; $kept)"
say "next: docker-compose${env_arg} up -d     (or: docker compose${env_arg} up -d), then open http://127.0.0.1:${port:-8080}"
user=$(get _AIRFLOW_WWW_USER_USERNAME)
say "login: ${user:-airflow} / the _AIRFLOW_WWW_USER_PASSWORD in $ENV_FILE"
say "MLflow (runs, models, the champion alias): http://127.0.0.1:${mlflow_port:-5000}"
