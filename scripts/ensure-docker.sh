#!/usr/bin/env bash
# Make sure a Docker engine answers on /var/run/docker.sock (idempotent).
# CI machines start with nothing running, so this installs docker.io from Debian when
# dockerd is missing and starts the daemon in the background (log: /tmp/dood-dockerd.log).
set -euo pipefail

LOG=/tmp/dood-dockerd.log
SOCK=/var/run/docker.sock
WAIT="${DOCKER_WAIT_SECONDS:-60}"

NAME=ensure-docker
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # ROOT, say, die
ready() { docker info --format '{{.ServerVersion}}' >/dev/null 2>&1; }
status() { docker info --format 'Docker engine ready (server {{.ServerVersion}}, storage {{.Driver}}, {{.NCPU}} CPUs)' 2>/dev/null; }

if command -v docker >/dev/null 2>&1 && ready; then
  say "$(status), already running"; exit 0
fi

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
  [[ $(id -u) -eq 0 ]] || die "dockerd is not installed and we are not root: install docker.io or run as root"
  say "installing docker.io with apt-get (quiet)..."
  apt_install docker.io
fi

if pgrep -x dockerd >/dev/null 2>&1; then
  say "dockerd is already starting (pid $(pgrep -x dockerd | head -1)); waiting for it"
else
  [[ $(id -u) -eq 0 ]] || die "no Docker engine answers and only root can start dockerd"
  # A pid file left by a daemon that was killed makes dockerd refuse to start.
  if [[ -f /var/run/docker.pid ]] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid
  fi
  say "starting dockerd in the background (log: $LOG)"
  setsid dockerd --host "unix://$SOCK" >"$LOG" 2>&1 </dev/null &
fi

for ((i = 0; i < WAIT; i++)); do
  if ready; then say "$(status) after ${i}s"; exit 0; fi
  sleep 1
done
tail -n 20 "$LOG" >&2 2>/dev/null || true
die "no Docker engine answered on $SOCK within ${WAIT}s (see $LOG)"
