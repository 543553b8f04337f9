"""A worker dying mid-training: the next try adopts the running container; a graceful shutdown keeps it
running; a user kill (mark failed, then SIGTERM as the supervisor sends it) stops and removes it.

The "worker" is a subprocess running the DAG with `dag.test()` against the same metadata DB.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.airflow_stack import MAIN_ENGINE_URL, EngineEvents
from tests.integration.conftest import xcom_value

DAG_ID = "dood_it_reattach"
DAGS_DIR = Path(__file__).parent / "dags"
WORKER = (
    "import sys; from datetime import datetime; sys.path.insert(0, sys.argv[1]); import dood_it_dags; "
    "when = datetime.fromisoformat(sys.argv[2]); dood_it_dags.DAGS[sys.argv[3]].test(logical_date=when, run_after=when)"
)


def start_worker(when, tmp_path):
    log = open(tmp_path / "worker.log", "wb")
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(DAGS_DIR), when.isoformat(), DAG_ID],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_for_running_container(ours, worker, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [c for c in ours(DAG_ID) if c["State"] == "running"]
        if running:
            return running[0]
        if worker.poll() is not None:
            pytest.fail(f"worker exited early with {worker.returncode}")
        time.sleep(0.2)
    pytest.fail("the training container never started")


def set_task_state(dagrun_run_id: str, state: str) -> None:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = session.query(TaskInstance).filter_by(dag_id=DAG_ID, run_id=dagrun_run_id, task_id="run").one()
        ti.state = state


def test_worker_sigkilled_mid_training_next_try_reattaches(docker_api, dag_run, next_date, ours, tmp_path):
    from tests.integration.conftest import run_id_for

    creates = EngineEvents(MAIN_ENGINE_URL, DAG_ID)  # recorded as they happen, not from the daemon's buffer
    try:
        worker = start_worker(next_date, tmp_path)
        container = wait_for_running_container(ours, worker)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
        assert docker_api.inspect_container(container["Id"])["State"]["Running"], "training died with the worker"

        set_task_state(run_id_for(next_date), "up_for_retry")  # what the scheduler does for a dead worker
        dagrun = dag_run(DAG_ID, next_date)
    finally:
        creates.stop()

    assert dagrun.state == "success"
    assert xcom_value(dagrun)["return_value"] == {"done": True, "try": 1}  # written by try 1's container
    assert len(creates.of("create")) == 1  # exactly one container was ever created
    assert ours(DAG_ID) == []


def test_graceful_worker_shutdown_keeps_training_running(docker_api, next_date, ours, tmp_path):
    worker = start_worker(next_date, tmp_path)
    container = wait_for_running_container(ours, worker)
    os.killpg(worker.pid, signal.SIGTERM)  # Airflow's task runner calls on_kill on SIGTERM
    time.sleep(2)
    state = docker_api.inspect_container(container["Id"])["State"]
    try:
        assert state["Running"], "a graceful worker shutdown must not stop the training (reattach=True)"
        assert "leaving container" in (tmp_path / "worker.log").read_text()
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)


def test_user_kill_stops_and_removes_the_container(docker_api, next_date, ours, tmp_path):
    from tests.integration.conftest import run_id_for

    worker = start_worker(next_date, tmp_path)
    container = wait_for_running_container(ours, worker)
    set_task_state(run_id_for(next_date), "failed")  # the user marks it failed...
    os.killpg(worker.pid, signal.SIGTERM)  # ...and the supervisor, told so by the API, sends SIGTERM
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(c["Id"] == container["Id"] for c in ours(DAG_ID)):
            time.sleep(0.2)
        assert all(c["Id"] != container["Id"] for c in ours(DAG_ID)), "user kill must remove the container"
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
