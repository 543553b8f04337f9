"""DAGs run by a real scheduler in tests/integration/test_kill_paths.py (one scenario each)."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG

from dood import DoodContainerOperator

IMAGE = "dood-test-busybox:latest"
MARKS = f"{os.environ.get('DOOD_STACK_ROOT', '/tmp/dood-stack')}/marks"
GRACE = 6  # longer than the Task SDK's 5 s SIGTERM -> SIGKILL escalation: the case that used to leak
# Traps SIGTERM, notes it in the bind mount, and keeps running: only the SIGKILL after the grace ends it.
STUBBORN = (
    "trap 'echo got-sigterm; touch /marks/$DOOD_DAG_ID-$DOOD_TRY_NUMBER.term' TERM; "
    "echo training-started; while :; do sleep 1; done"
)
# Traps SIGTERM, notes it in the bind mount and exits: proves the graceful stop came first.
GRACEFUL = (
    "trap 'echo got-sigterm; touch /marks/$DOOD_DAG_ID-$DOOD_TRY_NUMBER.term; exit 143' TERM; "
    "echo training-started; while :; do sleep 1; done"
)
RESULT = 'printf \'{"done": true, "try": %s}\' "$DOOD_TRY_NUMBER" > "$DOOD_RESULT_FILE"'


def _dag(dag_id: str) -> DAG:
    return DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["dood-integration-test"])


def _step(dag_id: str, script: str, **kwargs) -> DAG:
    with _dag(dag_id) as dag:
        DoodContainerOperator(
            task_id="run", image=IMAGE, command=["sh", "-c", script], mounts=[f"{MARKS}:/marks"], **kwargs
        )
    return dag


kill_blocking = _step("dood_sched_kill_blocking", STUBBORN, stop_grace_period=GRACE)
kill_deferrable = _step("dood_sched_kill_deferrable", STUBBORN, stop_grace_period=GRACE, deferrable=True)
timeout_blocking = _step(
    "dood_sched_timeout_blocking", GRACEFUL, stop_grace_period=GRACE, execution_timeout=timedelta(seconds=4)
)
timeout_deferrable = _step(
    "dood_sched_timeout_deferrable",
    GRACEFUL,
    stop_grace_period=GRACE,
    execution_timeout=timedelta(seconds=4),
    deferrable=True,
)
# Adopted by try 2 after try 1's supervisor is SIGKILLed; try 1's runner lives on, orphaned.
orphan_quiet = _step(
    "dood_sched_orphan_quiet", f"echo training-started; sleep 30; {RESULT}", retries=1, retry_delay=timedelta(0)
)
orphan_chatty = _step(
    "dood_sched_orphan_chatty",
    f"i=0; while [ $i -lt 30 ]; do echo line $i; sleep 1; i=$((i+1)); done; {RESULT}",
    retries=1,
    retry_delay=timedelta(0),
)
# A user clears the running task: try 1's container is stopped (SIGTERM noted) and removed; the new try
# runs a fresh container, which ends with its result within a second or two of the deferral: the case of
# Airflow 3.3's race that the trigger's hold avoids (dood.triggers.container.RESUME_SETTLE_SECONDS: a try
# resumed before the scheduler processed its deferring worker's late "success" executor event was marked
# FAILED; with `sleep 8` here it still failed on a busy CI machine, with `sleep 1` in 2 of 10 runs unheld).
CLEARED = f'if [ "$DOOD_TRY_NUMBER" -gt 1 ]; then sleep 1; {RESULT}; exit 0; fi; {GRACEFUL}'
clear_blocking = _step("dood_sched_clear_blocking", CLEARED, stop_grace_period=GRACE)
clear_deferrable = _step("dood_sched_clear_deferrable", CLEARED, stop_grace_period=GRACE, deferrable=True)
# The triggerer restarts while the task is deferred: the trigger resumes on the new triggerer.
triggerer_restart = _step("dood_sched_triggerer_restart", f"echo training-started; sleep 25; {RESULT}", deferrable=True)
# The worker dies (its task runner, or runner and supervisor, SIGKILLed): try 2 adopts the container.
worker_killed_runner = _step(
    "dood_sched_worker_killed_runner",
    f"echo training-started; sleep 30; {RESULT}",
    retries=1,
    retry_delay=timedelta(0),
)
worker_killed_worker = _step(
    "dood_sched_worker_killed_worker",
    f"echo training-started; sleep 30; {RESULT}",
    retries=1,
    retry_delay=timedelta(0),
)
# Someone force-removes the running container (`docker rm -f`): the task fails saying so, not with a 404.
removed_blocking = _step("dood_sched_removed_blocking", "echo training-started; sleep 60")
removed_deferrable = _step("dood_sched_removed_deferrable", "echo training-started; sleep 60", deferrable=True)
