"""A GPU task for the GPU tests (tests/integration/test_gpus.py): its config, written by the test, points at
the second engine (with the fake NVIDIA hook) and lists its GPUs."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG

from dood import DoodContainerOperator

CONFIG = Path(os.environ.get("DOOD_TEST_ROOT", "/tmp/dood-test")) / "gpu" / "dood.yaml"

with DAG("dood_it_gpu_operator", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
    DoodContainerOperator(
        task_id="train",
        image="dood-test-busybox:latest",
        command=["sh", "-c", 'printf \'{"gpus": "%s"}\' "$NVIDIA_VISIBLE_DEVICES" > "$DOOD_RESULT_FILE"'],
        resources={"gpus": 1},
        config_path=str(CONFIG),
    )

# A training that outlives its worker: tests/integration/test_gpus.py SIGKILLs the worker, the retry reattaches.
with DAG("dood_it_gpu_reattach", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as reattach_dag:
    DoodContainerOperator(
        task_id="train",
        image="dood-test-busybox:latest",
        command=[
            "sh",
            "-c",
            'sleep 60; printf \'{"gpus": "%s", "try": %s}\' "$NVIDIA_VISIBLE_DEVICES" "$DOOD_TRY_NUMBER" '
            '> "$DOOD_RESULT_FILE"',
        ],
        resources={"gpus": 1},
        config_path=str(CONFIG),
        retries=1,
        retry_delay=timedelta(seconds=0),
    )

# Waits deferred for a GPU that never frees: its execution_timeout ends the wait (tests/integration/test_gpus.py).
with DAG("dood_it_gpu_deferred_timeout", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as timeout_dag:
    DoodContainerOperator(
        task_id="train",
        image="dood-test-busybox:latest",
        command=["true"],
        resources={"gpus": 1},
        config_path=str(CONFIG),
        deferrable=True,
        execution_timeout=timedelta(seconds=10),
    )
