"""DAGs of the browser tests (tests/ui): containers that run a while, and a light pipeline (busybox steps)."""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG

from dood import DoodContainerOperator
from dood.dag_factory import build_dags

ROOT = os.environ.get("DOOD_STACK_ROOT", "/tmp/dood-stack")
IMAGE = "dood-test-busybox:latest"
# Attacker-controlled text in the output and the labels: the pages must show it, escaped.
# And what a terminal acts on: a progress bar redrawn with carriage returns, colours, a right-to-left override.
TERMINAL = (
    r"printf '  0%%|          | 0/100\r 50%%|#####     | 50/100\r100%%|##########| 100/100\n'; "
    r"printf '\033[32mINFO\033[0m trained\n'; "
    r"printf 'name: abc\342\200\256dcba\n'; "
)
SCRIPT = (
    "echo hello-from-dood; echo '<script>window.pwned=1</script><b>bold</b>'; " + TERMINAL + "sleep 600"
)  # outlives slow tests


def _sleeper(dag_id: str) -> DAG:
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["dood-ui-test"]) as dag:
        DoodContainerOperator(
            task_id="run",
            image=IMAGE,
            command=["sh", "-c", SCRIPT],
            mounts=[f"{ROOT}/data:/data:ro"],
            labels={"team": "<img src=x onerror=window.pwned=1>"},
            stop_grace_period=1,
        )
    return dag


dood_ui_sleep = _sleeper("dood_ui_sleep")
dood_ui_secret = _sleeper("dood_ui_secret")
globals().update(build_dags())  # dood_ui_ml, from $DOOD_CONFIG
