"""DAGs of tests/integration/test_clear_errors.py: a step whose image is missing, one whose mount source is."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG

from dood import DoodContainerOperator

ROOT = Path(os.environ.get("DOOD_TEST_ROOT", "/tmp/dood-test")) / "clear-errors"
CONFIG = str(ROOT / "dood.yaml")  # written by the test: runs_root under ROOT
MISSING_IMAGE = "dood-it-no-such-image:latest"
MISSING_SOURCE = ROOT / "no-such-dir"
DAGS: dict[str, DAG] = {}


def one_task_dag(dag_id: str, **operator_args) -> None:
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        DoodContainerOperator(
            task_id="run", command=["sh", "-c", "echo must not run"], config_path=CONFIG, **operator_args
        )
    DAGS[dag_id] = dag


one_task_dag("dood_it_missing_image", image=MISSING_IMAGE)
one_task_dag("dood_it_missing_source", image="dood-test-busybox:latest", mounts=[f"{MISSING_SOURCE}:/data:ro"])
globals().update(DAGS)
