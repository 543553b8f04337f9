"""A step on an engine with user-namespace remapping, through dood-proxy (tests/integration/test_userns.py
writes the config: the proxy's URL, a runs root below the proxy's allowed root)."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG

from dood import DoodContainerOperator

CONFIG = Path(os.environ.get("DOOD_TEST_ROOT", "/tmp/dood-test")) / "userns" / "dood.yaml"

with DAG("dood_it_userns", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
    DoodContainerOperator(
        task_id="run",
        image="dood-test-busybox:latest",
        command=["sh", "-c", 'printf \'{"id": "%s"}\' "$(id -u):$(id -g)" > "$DOOD_RESULT_FILE"'],
        config_path=str(CONFIG),
    )
