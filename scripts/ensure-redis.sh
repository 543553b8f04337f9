#!/usr/bin/env bash
# Make sure Debian's redis-server is installed, idempotent: tests/integration/test_hosts_celery.py runs it as
# the Celery broker of its CeleryExecutor stack (a host process on a free loopback port, started by the test).
set -euo pipefail

REDIS=/usr/bin/redis-server
NAME=ensure-redis
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # ROOT, say, die

if [[ -x "$REDIS" ]]; then
  say "$("$REDIS" --version | cut -d' ' -f1-3), already installed"; exit 0
fi
[[ $(id -u) -eq 0 ]] || die "redis-server is not installed and we are not root: apt-get install redis-server"
say "installing redis-server with apt-get (quiet)..."
apt_install --no-install-recommends redis-server
# Debian's package starts a system redis on 6379 where an init system runs; the test starts its own
say "$("$REDIS" --version | cut -d' ' -f1-3) installed"
