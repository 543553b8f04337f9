#!/usr/bin/env bash
# `make test`: pytest (unit, integration on the real engine and a real Airflow, the browser) in the foreground, in
# two pytest-xdist workers and then a short serial phase, and the compose e2e (scripts/compose-e2e.sh) beside it.
# - pytest-xdist: the tests that can share the engine run in DOOD_TEST_WORKERS (default 2) workers, grouped by
#   tests/conftest.py (the dood_it* tests of the main engine in order on one worker, each real-scheduler or
#   second-engine file a group of its own); those marked `serial` (today only the fuzz: it floods the engine's
#   event buffer) then run alone. DOOD_TEST_WORKERS=1: one process, no xdist.
# - The e2e shares nothing with pytest but the engine: pytest's tests touch only their own containers (dood_it*,
#   their own stacks' dood_sched_*), the e2e its compose projects. Its output goes to var/test-logs/e2e.log and is
#   printed once pytest is done; DOOD_E2E_BESIDE=0 runs it after pytest instead.
# The exit code is non-zero when either failed. Where the time goes: README, "Tests".
set -uo pipefail

NAME=test
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # ROOT, say, die
cd "$ROOT"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
WORKERS="${DOOD_TEST_WORKERS:-2}"
LOGS="$ROOT/var/test-logs"
mkdir -p "$LOGS"

run_pytest() {
  if [[ "$WORKERS" == 1 ]]; then
    "$PY" -m pytest tests --ignore=tests/e2e
  else
    local rc=0
    "$PY" -m pytest tests --ignore=tests/e2e -m "not serial" -n "$WORKERS" --dist loadgroup || rc=$?
    "$PY" -m pytest tests --ignore=tests/e2e -m serial || rc=$((rc ? rc : $?))  # run even after a failure: all is said
    return "$rc"
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
