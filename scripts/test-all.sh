#!/usr/bin/env bash
# `make test`'s two suites side by side: pytest (unit, integration on the real engine and a real Airflow, the
# browser) in the foreground, and the compose e2e (scripts/compose-e2e.sh) beside it. They share nothing but the
# engine: pytest's tests touch only their own containers (dood_it*, their own stacks' dood_sched_*), the e2e its
# compose projects. Side by side, the wall time is the longer of the two instead of their sum (2026-12-07, 2 cores:
# pytest's 1,828 tests 39 min, the e2e's 27 tests 16 min beside them). The e2e's output goes to var/test-logs/e2e.log and is printed
# once pytest is done; the exit code is non-zero when either failed.
#   scripts/test-all.sh                  # DOOD_TEST_WORKERS=2: pytest's xdist phases (Makefile), then serial
#   DOOD_E2E_BESIDE=0 scripts/test-all.sh   # one after the other, as before
set -uo pipefail

NAME=test
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # ROOT, say, die
cd "$ROOT"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
WORKERS="${DOOD_TEST_WORKERS:-1}"
LOGS="$ROOT/var/test-logs"
mkdir -p "$LOGS"

run_pytest() {
  if [[ "$WORKERS" == 1 ]]; then
    "$PY" -m pytest tests --ignore=tests/e2e
  else
    "$PY" -m pytest tests --ignore=tests/e2e -m "not serial" -n "$WORKERS" --dist loadgroup &&
      "$PY" -m pytest tests --ignore=tests/e2e -m serial
  fi
}

t0=$(date +%s)
if [[ "${DOOD_E2E_BESIDE:-1}" == 0 ]]; then
  run_pytest
  pytest_rc=$?
  bash scripts/compose-e2e.sh
  e2e_rc=$?
else
  say "the compose e2e runs beside pytest; its output: $LOGS/e2e.log (printed when pytest is done)"
  bash scripts/compose-e2e.sh > "$LOGS/e2e.log" 2>&1 &
  e2e_pid=$!
  trap 'kill -- "$e2e_pid" 2>/dev/null' INT TERM
  run_pytest
  pytest_rc=$?
  say "pytest done (exit $pytest_rc) after $(($(date +%s) - t0))s; waiting for the compose e2e"
  wait "$e2e_pid"
  e2e_rc=$?
  section "compose e2e ($LOGS/e2e.log)"
  cat "$LOGS/e2e.log"
fi
say "pytest: exit $pytest_rc; compose e2e: exit $e2e_rc; $(($(date +%s) - t0))s in all"
[[ $pytest_rc -eq 0 && $e2e_rc -eq 0 ]]
