"""DAGs run by a real scheduler in tests/integration/test_resume_paths.py: finished trainings that must not
fail for reasons that are not theirs (a dood config broken while they wait, the operator's and the sensor's;
a deadline before the start), and a clear racing the trigger, which no later try may answer with the
cleared container."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta

from airflow.sdk import DAG

from dood import DoodContainerOperator, DoodContainerSensor

IMAGE = "dood-test-busybox:latest"
MARKS = f"{os.environ.get('DOOD_STACK_ROOT', '/tmp/dood-stack')}/marks"
GRACE = 6
TRAINING_SECONDS = 25  # long enough for the test to see both tasks deferred, then break the config
SLOW_START_SECONDS = 7  # the worker's start-up: longer than the timeout below
TIMEOUT_SECONDS = 5  # execution_timeout: passes before the container starts; execute() itself stays within it

RESULT = 'printf \'{"task": "%s", "done": true}\' "$DOOD_TASK_ID" > "$DOOD_RESULT_FILE"'
# Notes a SIGTERM in the bind mount and exits; otherwise runs 20 s.
GRACEFUL_20S = (
    "trap 'touch /marks/$DOOD_DAG_ID-$DOOD_TRY_NUMBER.term; exit 143' TERM; "
    "i=0; while [ $i -lt 20 ]; do sleep 1; i=$((i+1)); done"
)


# A cleared try's container (try 1) runs CLEARED_TRY_SECONDS[case]; any later try's 2 s. Both trap SIGTERM,
# note it in the bind mount and exit 143; the result names the try whose container wrote it.
CLEARED_TRY_SECONDS = {"running": 60, "exited": 15}
RESULT_OF_TRY = 'printf \'{"done": true, "try": %s}\' "$DOOD_TRY_NUMBER" > "$DOOD_RESULT_FILE"'


def _try_dependent(first_try_seconds: int) -> str:
    return (
        "trap 'touch /marks/$DOOD_DAG_ID-$DOOD_TRY_NUMBER.term; exit 143' TERM; "
        f'if [ "$DOOD_TRY_NUMBER" = 1 ]; then n={first_try_seconds}; else n=2; fi; '
        f"i=0; while [ $i -lt $n ]; do sleep 1; i=$((i+1)); done; {RESULT_OF_TRY}"
    )


def _slow_worker(context) -> None:
    """A worker slow to start (loaded host, slow imports): the time counts towards execution_timeout, which
    Airflow measures from the task's start, but runs before execute() and its own timeout alarm."""
    time.sleep(SLOW_START_SECONDS)


with DAG(
    "dood_sched_config_broken_while_waiting",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["dood-integration-test"],
) as config_broken_while_waiting:
    for task_id in ("train_a", "train_b"):
        DoodContainerOperator(
            task_id=task_id,
            image=IMAGE,
            command=["sh", "-c", f"echo training-started; sleep {TRAINING_SECONDS}; {RESULT}"],
            deferrable=True,
        )

with DAG(
    "dood_sched_deadline_before_start",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["dood-integration-test"],
) as deadline_before_start:
    DoodContainerOperator(
        task_id="run",
        image=IMAGE,
        command=["sh", "-c", GRACEFUL_20S],
        mounts=[f"{MARKS}:/marks"],
        stop_grace_period=GRACE,
        execution_timeout=timedelta(seconds=TIMEOUT_SECONDS),
        pre_execute=_slow_worker,
        deferrable=True,
    )

with DAG(
    "dood_sched_sensor_config_broken",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["dood-integration-test"],
) as sensor_config_broken:
    # Handed off (wait=False), waited for by a deferrable sensor while the config breaks.
    DoodContainerOperator(
        task_id="start",
        image=IMAGE,
        command=["sh", "-c", f"echo training-started; sleep {TRAINING_SECONDS}; {RESULT}"],
        wait=False,
    ) >> DoodContainerSensor(task_id="wait", upstream_task_id="start", deferrable=True, poke_interval=5)

for case, seconds in CLEARED_TRY_SECONDS.items():
    # retries=1: the try after a clear is not told apart by "no retries"
    with DAG(
        f"dood_sched_clear_racing_trigger_{case}",
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        tags=["dood-integration-test"],
    ) as clear_racing_trigger:
        DoodContainerOperator(
            task_id="run",
            image=IMAGE,
            command=["sh", "-c", _try_dependent(seconds)],
            mounts=[f"{MARKS}:/marks"],
            stop_grace_period=GRACE,
            deferrable=True,
            retries=1,
            retry_delay=timedelta(0),
        )
