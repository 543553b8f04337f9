"""An Airflow DAG file for tests/integration/test_hosts_celery.py (config: ../hosts_celery.yaml): the
pipeline dood_hc_pipeline, and steps pinned to host-b, run by the Celery worker of host-b's queue (and one
pinned to host-a, for benchmarks/bench_hosts.py); the pipeline dood_hc_restart, with the pipeline config's
default retries, for the worker-restart test and benchmarks/bench_worker_restart.py."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG

from dood import DoodContainerOperator
from dood.config.model import load_config
from dood.config.pipelines import Pipeline
from dood.dag_factory import build_dag, build_dags

IMAGE = "dood-test-busybox:latest"
RESULT = 'printf \'{"try": %s}\' "$DOOD_TRY_NUMBER" > "$DOOD_RESULT_FILE"'

globals().update(build_dags())  # dood_hc_pipeline, from $DOOD_CONFIG


def _on_b(dag_id: str, script: str, host: str = "host-b", **kwargs) -> DAG:
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with DAG(dag_id, schedule=None, start_date=start, catchup=False, tags=["dood-integration-test"]) as dag:
        DoodContainerOperator(task_id="run", image=IMAGE, command=["sh", "-c", script], host=host, **kwargs)
    return dag


dood_hc_pinned = _on_b("dood_hc_pinned", RESULT)
dood_hc_pinned_a = _on_b("dood_hc_pinned_a", RESULT, host="host-a")
# mapped: routed to host-b's queue by its partial arguments
with DAG("dood_hc_mapped", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), catchup=False):
    DoodContainerOperator.partial(task_id="run", image=IMAGE, host="host-b").expand(
        command=[["sh", "-c", RESULT], ["sh", "-c", RESULT]]
    )
# SIGKILLed with its worker mid-training: try 2, on the restarted worker, adopts the container
dood_hc_killed = _on_b("dood_hc_killed", f"echo training; sleep 25; {RESULT}", retries=1, retry_delay=timedelta(0))
# deferred while the triggerer is killed and started again
dood_hc_deferred = _on_b("dood_hc_deferred", f"echo training; sleep 20; {RESULT}", deferrable=True)
# writes a line, then another a few seconds later: its task log is read while it runs and after
dood_hc_logged = _on_b(
    "dood_hc_logged", f'echo "first line of $DOOD_RUN_ID"; sleep 8; echo "last line of $DOOD_RUN_ID"; {RESULT}'
)


def _restart_pipeline() -> DAG:
    """hc_pipeline with the pipeline config's defaults of `retries` and `retry_delay_seconds` (nothing set), and
    a training on host-b of $DOOD_HC_TRAIN_SECONDS (default 60): its worker is killed while it runs."""
    config = load_config(view=False)
    base = config.pipelines["hc_pipeline"]
    seconds = int(os.environ.get("DOOD_HC_TRAIN_SECONDS", "60"))
    train = base.steps["train"]
    command = ["sh", "-c", f'echo "training for {seconds} s"; sleep {seconds}; {train.command[-1]}']
    fields = base.model_dump(exclude={"retries", "retry_delay_seconds", "steps"})
    steps = {**base.steps, "train": train.model_copy(update={"command": command})}
    return build_dag("hc_restart", Pipeline(**fields, steps=steps), hosts=config.hosts)


dood_hc_restart = _restart_pipeline()
