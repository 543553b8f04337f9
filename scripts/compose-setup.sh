#!/usr/bin/env bash
# One step before `docker-compose up -d`, with or without a registry: builds the images (the public bases
# where a registry answers, local fallbacks where none does) and writes `.env` next to docker-compose.yml
# with everything compose needs: the data root, the socket's group, the image names, an admin password.
#   scripts/compose-setup.sh            # then: docker-compose up -d   (or: docker compose up -d)
# An existing .env keeps its values (password, port, root); only the image names are refreshed.
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
DOCKER_BUILDKIT=0 bash "$ROOT/scripts/build-images.sh" ml
DOCKER_BUILDKIT=0 bash "$ROOT/scripts/build-compose-images.sh"
[[ -f "$IMAGES_ENV" ]] || die "$IMAGES_ENV was not written by scripts/build-compose-images.sh"

host_root=$(get DOOD_HOST_ROOT)
host_root=${host_root:-$ROOT/var/compose/dood}
mkdir -p "$host_root"
put DOOD_HOST_ROOT "$host_root"
put DOCKER_GID "$(stat -c %g /var/run/docker.sock)"
[[ -n "$(get _AIRFLOW_WWW_USER_PASSWORD)" ]] || put _AIRFLOW_WWW_USER_PASSWORD "$(python3 -c 'import secrets; print(secrets.token_urlsafe(12))')"
while IFS='=' read -r key value; do
  [[ "$key" =~ ^[A-Z_]+$ ]] && put "$key" "$value"
done <"$IMAGES_ENV"

port=$(get AIRFLOW_API_PORT)
env_arg=""  # .env itself is git-ignored; another file is the user's to keep safe
[[ "$ENV_FILE" == "$ROOT/.env" ]] || env_arg=" --env-file $ENV_FILE"
kept="git-ignored"
[[ -z "$env_arg" ]] || kept="keep it out of version control"
say "wrote $ENV_FILE (mode 600: it holds the admin password; $kept)"
say "next: docker-compose${env_arg} up -d     (or: docker compose${env_arg} up -d), then open http://127.0.0.1:${port:-8080}"
user=$(get _AIRFLOW_WWW_USER_USERNAME)
say "login: ${user:-airflow} / the _AIRFLOW_WWW_USER_PASSWORD in $ENV_FILE"
