"""DAGs exercised by the integration tests (one behaviour each), run with `dag.test()`."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG

from dood import DoodContainerOperator, DoodContainerSensor

IMAGE = "dood-test-busybox:latest"
ROOT = Path(os.environ.get("DOOD_TEST_ROOT", "/tmp/dood-test"))
START = datetime(2026, 1, 1)


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


DAGS: dict[str, DAG] = {}


def dag(dag_id: str) -> DAG:
    DAGS[dag_id] = DAG(dag_id, schedule=None, start_date=START, catchup=False, tags=["dood-integration-test"])
    return DAGS[dag_id]


with dag("dood_it_success"):
    DoodContainerOperator(
        task_id="run",
        image=IMAGE,
        environment={"GREETING": "hello from {{ dag.dag_id }}"},
        private_environment={"SECRET_TOKEN": "s3cret-value"},
        command=sh(
            'echo "$GREETING"; echo "to stderr" >&2; i=0; while [ $i -lt 3 ]; do echo "step $i"; i=$((i+1)); done; '
            'token_length=$(printf %s "$SECRET_TOKEN" | wc -c); '
            'printf \'{"accuracy": 0.93, "rows": 3, "token_seen": "%s"}\' "$token_length" > "$DOOD_RESULT_FILE"'
        ),
        labels={"team": "ml"},
    )

with dag("dood_it_no_result"):
    DoodContainerOperator(task_id="run", image=IMAGE, command=sh('echo "{\\"looks\\": \\"like json\\"}"'))

with dag("dood_it_fail"):
    DoodContainerOperator(task_id="run", image=IMAGE, command=sh("seq 1 60 | sed 's/^/line /'; exit 7"))

with dag("dood_it_skip"):
    DoodContainerOperator(task_id="run", image=IMAGE, command=sh("echo nothing new; exit 99"), skip_on_exit_code=99)

with dag("dood_it_retry"):
    DoodContainerOperator(
        task_id="run",
        image=IMAGE,
        command=sh('echo "try $DOOD_TRY_NUMBER"; [ "$DOOD_TRY_NUMBER" -ge 2 ] || exit 1'),
        retries=1,
        retry_delay=timedelta(seconds=0),
        auto_remove="never",
    )

with dag("dood_it_leftover"):
    DoodContainerOperator(task_id="run", image=IMAGE, command=sh("echo fresh run"))

with dag("dood_it_foreign"):
    DoodContainerOperator(task_id="run", image=IMAGE, command=sh("echo must not run"))

with dag("dood_it_mapped_mount"):
    DoodContainerOperator(
        task_id="run",
        image=IMAGE,
        mounts=[f"{ROOT / 'airflow-view' / 'out'}:/out", f"{ROOT / 'airflow-view' / 'in'}:/in:ro"],
        command=sh("cat /in/input.txt > /out/written-by-container.txt && ! touch /in/forbidden"),
        config_path=str(ROOT / "mapped.yaml"),
    )

with dag("dood_it_unmapped_mount"):
    DoodContainerOperator(
        task_id="run",
        image=IMAGE,
        mounts=["/etc:/host-etc:ro"],
        command=sh("echo must not run"),
        config_path=str(ROOT / "strict.yaml"),
    )

with dag("dood_it_timeout"):
    DoodContainerOperator(
        task_id="run",
        image=IMAGE,
        command=sh("echo started; sleep 300"),
        execution_timeout=timedelta(seconds=3),
        stop_grace_period=1,
    )

with dag("dood_it_oom"):
    DoodContainerOperator(
        task_id="run",
        image=IMAGE,
        command=sh("echo filling; head -c 300m /dev/zero | tail"),
        resources={"memory": "32m"},
    )

RESULT = 'printf \'{"done": true, "try": %s}\' "$DOOD_TRY_NUMBER" > "$DOOD_RESULT_FILE"'

with dag("dood_it_deferrable"):
    DoodContainerOperator(
        task_id="run",
        image=IMAGE,
        command=sh(f"echo deferred-start; sleep 2; echo deferred-end; {RESULT}"),
        deferrable=True,
    )

with dag("dood_it_deferrable_timeout"):
    DoodContainerOperator(
        task_id="run",
        image=IMAGE,
        command=sh("echo started; sleep 300"),
        deferrable=True,
        execution_timeout=timedelta(seconds=4),
        stop_grace_period=1,
    )

for mode in ("poke", "reschedule", "deferrable"):
    with dag(f"dood_it_sensor_{mode}"):
        start = DoodContainerOperator(
            task_id="start", image=IMAGE, command=sh(f"echo sensed-{mode}; sleep 3; {RESULT}"), wait=False
        )
        by_labels = DoodContainerSensor(
            task_id="wait",
            upstream_task_id="start",
            mode="reschedule" if mode == "reschedule" else "poke",
            deferrable=mode == "deferrable",
            poke_interval=1,
            auto_remove="never",
        )
        by_handle = DoodContainerSensor(
            task_id="wait_by_handle",
            container_id="{{ ti.xcom_pull(task_ids='start')['container_id'] }}",
            poke_interval=1,
        )
        start >> by_labels >> by_handle

with dag("dood_it_sensor_fails"):
    DoodContainerOperator(
        task_id="start", image=IMAGE, command=sh("echo about to fail; exit 5"), wait=False
    ) >> DoodContainerSensor(task_id="wait", upstream_task_id="start", poke_interval=1)

with dag("dood_it_reattach"):
    DoodContainerOperator(
        task_id="run",
        image=IMAGE,
        command=sh(f"echo training-started; sleep 25; echo training-finished; {RESULT}"),
        retries=1,
        retry_delay=timedelta(seconds=0),
    )

with dag("dood_it_no_retry"):
    DoodContainerOperator(
        task_id="run",
        image=IMAGE,
        command=sh('echo "[gate] FAILED: accuracy 0.5 is below the minimum 0.9"; exit "$DOOD_NO_RETRY_EXIT_CODE"'),
        retries=3,
        retry_delay=timedelta(seconds=0),
    )

# Everything in the run directory is the container's to choose: a result that is a link or a FIFO.
for _name, _plant in {
    "dood_it_result_link": 'ln -s /etc/hostname "$DOOD_RESULT_FILE"',
    "dood_it_result_zero": 'ln -s /dev/zero "$DOOD_RESULT_FILE"',
    "dood_it_result_fifo": 'mkfifo "$DOOD_RESULT_FILE"',
}.items():
    with dag(_name):
        DoodContainerOperator(task_id="run", image=IMAGE, command=sh(f"{_plant} && echo planted"))

with dag("dood_it_too_many_cpus"):
    DoodContainerOperator(task_id="run", image=IMAGE, command=sh("echo must not run"), resources={"cpus": 512})
