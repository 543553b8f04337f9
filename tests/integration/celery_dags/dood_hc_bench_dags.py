"""An Airflow DAG file for benchmarks/bench_hosts.py --steps N (config: ../hosts_celery.yaml): N trivial steps
in one run, mapped (each try parses this small file, not N operators), all on host-a
(`dood_hc_steps_one_host`) or half on host-a and half on host-b (`dood_hc_steps_two_hosts`)."""

from __future__ import annotations

import os
from datetime import datetime, timezone

from airflow.sdk import DAG

from dood import DoodContainerOperator

IMAGE = "dood-test-busybox:latest"
STEPS = int(os.environ.get("DOOD_HC_BENCH_STEPS", "100"))


def _steps(dag_id: str, hosts: tuple[str, ...]) -> DAG:
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with DAG(dag_id, schedule=None, start_date=start, catchup=False, max_active_tasks=STEPS) as dag:
        for host in hosts:
            DoodContainerOperator.partial(task_id=f"on_{host.replace('-', '_')}", image=IMAGE, host=host).expand(
                command=[["true"]] * (STEPS // len(hosts))
            )
    return dag


dood_hc_steps_one_host = _steps("dood_hc_steps_one_host", ("host-a",))
dood_hc_steps_two_hosts = _steps("dood_hc_steps_two_hosts", ("host-a", "host-b"))
