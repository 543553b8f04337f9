"""GPU DAGs run by a real scheduler in tests/integration/test_gpu_scheduler.py: deferrable GPU tasks competing
for the 4 GPUs of the second engine (its fake NVIDIA hook records which GPUs each container got).

Each step holds its GPUs until the test opens its DAG's gate (`marks/<dag_id>.go`, once every task either holds
GPUs or waits deferred): the contention is certain, not a matter of how fast a loaded machine starts tasks, and
no step sleeps longer than the scenario needs."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG

from dood import DoodContainerOperator

IMAGE = "dood-test-busybox:latest"
MARKS = f"{os.environ.get('DOOD_STACK_ROOT', '/tmp/dood-stack')}/marks"
# Waits for the gate (5 minutes at most: a failed test leaves no step running), trains 10 s, writes its GPUs.
# The 10 s: a step resumed after the gate that finds no GPU free defers again; if GPUs freed at once, its trigger
# could fire before the scheduler has handled the deferral (the Airflow race below) and the retry would find no
# container left to adopt.
GATED = "for i in $(seq 1500); do [ -e /marks/$DOOD_DAG_ID.go ] && break; sleep 0.2; done; sleep 10; "
RESULT = 'printf \'{"gpus": "%s"}\' "$NVIDIA_VISIBLE_DEVICES" > "$DOOD_RESULT_FILE"'
MIXED = {"two_a": 2, "one_a": 1, "one_b": 1, "all": "all", "one_c": 1, "two_b": 2}


def _dag(dag_id: str, sizes: dict[str, int | str]) -> DAG:
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["dood-gpu-test"]) as dag:
        for task_id, gpus in sizes.items():
            DoodContainerOperator(
                task_id=task_id,
                image=IMAGE,
                command=["sh", "-c", GATED + RESULT],
                mounts=[f"{MARKS}:/marks"],
                resources={"gpus": gpus},
                deferrable=True,
                # Airflow's own race on a loaded machine: a trigger firing before the scheduler has handled the
                # executor's report of the deferral marks the task failed ("finished with state success, but
                # the task instance's state attribute is queued"); the retry adopts its container (reattach).
                retries=2,
                retry_delay=timedelta(seconds=0),
            )
    return dag


eight_ones = _dag("dood_sched_gpus_eight", {f"t{i}": 1 for i in range(8)})
mixed = _dag("dood_sched_gpus_mixed", MIXED)
