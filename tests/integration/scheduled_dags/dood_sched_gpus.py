"""GPU DAGs run by a real scheduler in tests/integration/test_gpu_scheduler.py: deferrable GPU tasks competing
for the 4 GPUs of the second engine (its fake NVIDIA hook records which GPUs each container got)."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from dood import DoodContainerOperator

IMAGE = "dood-test-busybox:latest"
RESULT = 'printf \'{"gpus": "%s"}\' "$NVIDIA_VISIBLE_DEVICES" > "$DOOD_RESULT_FILE"'
MIXED = {"two_a": 2, "one_a": 1, "one_b": 1, "all": "all", "one_c": 1, "two_b": 2}


def _dag(dag_id: str, sizes: dict[str, int | str]) -> DAG:
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["dood-gpu-test"]) as dag:
        for task_id, gpus in sizes.items():
            DoodContainerOperator(
                task_id=task_id,
                image=IMAGE,
                command=["sh", "-c", f"sleep 30; {RESULT}"],
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
