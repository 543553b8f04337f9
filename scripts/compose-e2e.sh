#!/usr/bin/env bash
# End-to-end test of the docker-compose stack: Airflow 3.3 in containers launching the pipeline steps as
# sibling containers through dood-proxy (the only container with the host's socket), with host and container
# paths that differ.
#   scripts/compose-e2e.sh [pytest args...]
#   DOOD_E2E_EXECUTOR=celery scripts/compose-e2e.sh    # the same on the `celery` profile (redis + a worker)
# Sets up what it needs (Docker engine, docker-compose, the images — offline fallback included), then runs
# `pytest tests/e2e`, which brings the stack up as project dood-e2e and always tears it down.
# Takes about 3 minutes once the images exist (first build: a few minutes more).
set -euo pipefail

NAME=compose-e2e
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # ROOT, say, die
PY="${PYTHON:-$ROOT/.venv/bin/python}"
export DOCKER_BUILDKIT=0

step() {  # step NAME CMD...: run and time it
  local name="$1" t0
  shift
  t0=$(date +%s)
  "$@"
  say "$name: $(($(date +%s) - t0))s"
}

ensure_compose() {
  if command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1; then return; fi
  [[ $(id -u) -eq 0 ]] || die "docker-compose is not installed: apt-get install docker-compose (or install compose v2)"
  say "installing docker-compose with apt-get (quiet)..."
  apt_install docker-compose
}

[[ -x "$PY" ]] || die "no virtualenv at $ROOT/.venv: run \`make venv\` first"
step "docker engine" bash "$ROOT/scripts/ensure-docker.sh"
step "docker-compose" ensure_compose
# The images and the env file: tests/e2e runs scripts/compose-setup.sh, the quickstart's own step.

# Safety net: whatever happens to pytest (killed, interrupted), leave no stack behind. pytest's own
# teardown does the same with the env file it wrote; this finds the project by its label.
PROJECT="${DOOD_E2E_PROJECT:-dood-e2e}"
cleanup() {
  local label="com.docker.compose.project=$PROJECT" ids
  ids="$(docker ps -aq --filter "label=$label")"
  if [[ -n "$ids" ]]; then
    say "removing leftovers of project $PROJECT"
    xargs -r docker rm -f -v <<<"$ids" >/dev/null 2>&1 || true
  fi
  docker network ls -q --filter "label=$label" | xargs -r docker network rm >/dev/null 2>&1 || true
  docker volume ls -q --filter "label=$label" | xargs -r docker volume rm >/dev/null 2>&1 || true
  docker ps -aq --filter "label=dood.stack=$PROJECT" | xargs -r docker rm -f >/dev/null 2>&1 || true
}
trap cleanup EXIT

say "pytest tests/e2e (${DOOD_E2E_EXECUTOR:-local} executor: stack up, proxy refusals, REST-triggered run, backfill, teardown)"
t0=$(date +%s)
cd "$ROOT"
DOOD_E2E=1 "$PY" -m pytest tests/e2e -v -s "$@"  # -s: progress and timings as they happen
say "e2e tests: $(($(date +%s) - t0))s"
