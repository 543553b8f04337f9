"""A training started with wait=False, waited for by a rescheduling sensor, while the janitor sweeps the
same run every few seconds (tests/integration/test_handoff.py). The training runs until the test opens its gate
(`marks/dood_sched_handoff.go`: once the sweeps and the sensor have seen it running), TRAINING_SECONDS at most."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta

from airflow.sdk import DAG, task

from dood import DoodContainerOperator
from dood.sensors.container import DoodContainerSensor

IMAGE = "dood-test-busybox:latest"
TRAINING_SECONDS = 120  # at most: the test opens the gate as soon as the scenario has been seen
SWEEP_EVERY_SECONDS = 3
MARKS = f"{os.environ.get('DOOD_STACK_ROOT', '/tmp/dood-stack')}/marks"
GATED = f"for i in $(seq {TRAINING_SECONDS * 5}); do [ -e /marks/$DOOD_DAG_ID.go ] && break; sleep 0.2; done; "
RESULT = 'printf \'{"done": true}\' > "$DOOD_RESULT_FILE"'

with DAG(
    "dood_sched_handoff",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["dood-integration-test"],
) as handoff:
    start = DoodContainerOperator(
        task_id="start",
        image=IMAGE,
        command=["sh", "-c", f"echo training-started; {GATED}{RESULT}"],
        mounts=[f"{MARKS}:/marks"],
        wait=False,
    )
    # Retries: Airflow 3.3 can fail a reschedule-mode sensor on a stale executor success of its previous poke
    # (apache/airflow#71172: 1 to 5 times a run here, under load); each retry must find the training still there.
    wait = DoodContainerSensor(
        task_id="wait",
        upstream_task_id="start",
        mode="reschedule",
        poke_interval=10,
        timeout=300,
        retries=10,
        retry_delay=timedelta(seconds=1),
    )
    start >> wait

    @task(execution_timeout=timedelta(seconds=TRAINING_SECONDS + 120))
    def janitor(dag_run=None) -> list[str]:
        """The janitor (Task SDK lookups, as the maintenance DAG asks) sweeping this run every few seconds
        until the training's container is gone; returns every removal it made."""
        from dood.config.model import load_config
        from dood.hooks.dood import DoodHook
        from dood.janitor import sweep, task_sdk_states

        hook = DoodHook(load_config())
        scope = {"dood.dag_id": dag_run.dag_id, "dood.run_id": dag_run.run_id}
        removed: list[str] = []
        seen_training = False
        deadline = time.monotonic() + TRAINING_SECONDS + 100
        while time.monotonic() < deadline:
            verdicts = sweep(
                hook.api,
                task_sdk_states,
                ttl=timedelta(hours=24),
                dry_run=False,
                grace_seconds=2,
                only_labels=scope,
                stack=hook.stack,
            )
            removed += [f"{v.name}: {v.reason}" for v in verdicts]
            training = hook.find_containers({**scope, "dood.task_id": "start", "dood.try_number": "1"})
            seen_training = seen_training or bool(training)
            if seen_training and not training:
                return removed
            time.sleep(SWEEP_EVERY_SECONDS)
        raise TimeoutError(f"the training's container was still there after the sweeps; removed: {removed}")

    janitor()
