"""Steps placed on host-b, blocking and deferrable (tests/integration/test_hosts.py; config: ../hosts.yaml)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from airflow.sdk import DAG

from dood.operators.container import DoodContainerOperator
from dood.sensors.container import DoodContainerSensor

CONFIG = str(Path(__file__).resolve().parents[1] / "hosts.yaml")

with DAG("dood_it_hosts", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), catchup=False) as dag:
    DoodContainerOperator(
        task_id="on_b",
        image="dood-test-busybox:latest",
        command=["sh", "-c", 'echo on-b; echo \'{"host": "b"}\' > "$DOOD_RESULT_FILE"'],
        host="host-b",
        auto_remove="never",  # kept, so the test finds it on its engine
        config_path=CONFIG,
    )
    DoodContainerOperator(  # waits in the triggerer, which watches host-b's engine through host-b's TLS listener
        task_id="deferred_on_b",
        image="dood-test-busybox:latest",
        command=["sh", "-c", 'sleep 1; echo \'{"deferred": true}\' > "$DOOD_RESULT_FILE"'],
        host="host-b",
        deferrable=True,
        auto_remove="never",
        config_path=CONFIG,
    )
    DoodContainerOperator(  # started, not waited for: the sensor below (or one on another host) waits
        task_id="started_on_b",
        image="dood-test-busybox:latest",
        command=["sh", "-c", 'echo \'{"started": "b"}\' > "$DOOD_RESULT_FILE"'],
        host="host-b",
        wait=False,
        config_path=CONFIG,
    )
    DoodContainerSensor(task_id="watch_b", upstream_task_id="started_on_b", host="host-b", config_path=CONFIG)
