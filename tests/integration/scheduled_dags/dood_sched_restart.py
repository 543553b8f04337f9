"""Airflow DAGs whose containers run on the tests' second dockerd, restarted mid-run by
tests/integration/test_daemon_restart.py (dood's config there, written by the test, points docker.url at it).

Try 1's container trains for a while (the daemon restarts meanwhile); a retry's finishes at once. Each writes
its try number into the result, so the test knows which container's result became the XCom.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG

from dood import DoodContainerOperator

ROOT = os.environ.get("DOOD_STACK_ROOT", "/tmp/dood-stack")
CONFIG = f"{ROOT}/dood-restart.yaml"  # written by the test: the second engine's socket
IMAGE = "dood-test-busybox:latest"
TRAIN = (
    'echo training-started; if [ "$DOOD_TRY_NUMBER" = 1 ]; then sleep 25; fi; echo training-done; '
    'printf \'{"done": true, "try": %s}\' "$DOOD_TRY_NUMBER" > "$DOOD_RESULT_FILE"'
)


def _dag(dag_id: str, deferrable: bool) -> DAG:
    with DAG(
        dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["dood-integration-test"]
    ) as dag:
        DoodContainerOperator(
            task_id="run",
            image=IMAGE,
            command=["sh", "-c", TRAIN],
            config_path=CONFIG,
            deferrable=deferrable,
            retries=1,
            retry_delay=timedelta(0),
        )
    return dag


restart_blocking = _dag("dood_sched_restart_blocking", deferrable=False)
restart_deferrable = _dag("dood_sched_restart_deferrable", deferrable=True)
