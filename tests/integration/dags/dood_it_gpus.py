"""A GPU task for the GPU tests (tests/integration/test_gpus.py): its config, written by the test, points at
the second engine (with the fake NVIDIA hook) and lists its GPUs."""

from __future__ import annotations

import os
from datetime import datetime
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
