"""Every ending of a task removes its container, under a real scheduler (not `dag.test()`): mark failed
in blocking and deferrable modes with a grace period longer than the Task SDK's 5 s SIGTERM -> SIGKILL
escalation, `execution_timeout` (SIGTERM reaches the container before it goes), a supervisor killed
while its task runner lives on, orphaned, next to the try that adopted its container, a running task
cleared, the triggerer restarted mid-wait, the worker SIGKILLed, and a container force-removed under a
running task. (The Docker daemon restarted: test_daemon_restart.py.) docs/lifecycle.md mirrors these.

Counts and states come from the engine. DAG ids start with `dood_sched_`, not `dood_it`: the other
integration tests remove every `dood_it*` container, even while this module runs.
`DOOD_KILL_REPEATS=10` repeats each kill case (default 1).
"""

from __future__ import annotations

import os
import time

import psutil
import pytest

from tests.integration.airflow_stack import MAIN_ENGINE_URL, EngineEvents, engine_containers

GRACE = 6  # as in scheduled_dags/dood_sched_dags.py
REPEATS = range(int(os.environ.get("DOOD_KILL_REPEATS", "1")))


def wait_for_running_container(docker_api, dag_id: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [c for c in engine_containers(docker_api, dag_id) if c["State"] == "running"]
        if running:
            return running[0]
        time.sleep(0.2)
    pytest.fail(f"no running container of {dag_id} within {timeout:g}s")


def wait_for_no_container(docker_api, dag_id: str, timeout: float) -> list[dict]:
    """Polls the engine until none of the DAG's containers is left, in any state; returns what is left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = engine_containers(docker_api, dag_id)
        if not left:
            return []
        time.sleep(0.25)
    return [{"name": c["Names"][0], "state": c["State"], "status": c["Status"]} for c in left]


def sigterm_mark(stack, dag_id: str, try_number: int = 1):
    return stack.home / "marks" / f"{dag_id}-{try_number}.term"


@pytest.fixture
def recorded():
    """Starts recording a DAG's container events (the engine's, as they happen); stops after the test."""
    recorders = []

    def record(dag_id: str) -> EngineEvents:
        recorders.append(EngineEvents(MAIN_ENGINE_URL, dag_id))
        return recorders[-1]

    yield record
    for recorder in recorders:
        recorder.stop()


def start(stack, docker_api, dag_id: str, recorded) -> tuple[str, EngineEvents]:
    for old in (stack.home / "marks").glob(f"{dag_id}-*"):
        old.unlink()
    events = recorded(dag_id)
    run_id = stack.trigger(dag_id)
    wait_for_running_container(docker_api, dag_id)
    return run_id, events


@pytest.mark.parametrize("repeat", REPEATS)
def test_marked_failed_blocking_with_grace_over_5s_removes_the_container(airflow_stack, docker_api, recorded, repeat):
    dag_id = "dood_sched_kill_blocking"
    run_id, events = start(airflow_stack, docker_api, dag_id, recorded)
    airflow_stack.wait_for_task(dag_id, run_id, ("running",))
    time.sleep(1)  # the trap is installed by the container's first line

    airflow_stack.set_task_state(dag_id, run_id, "failed")

    left = wait_for_no_container(docker_api, dag_id, timeout=GRACE + 30)
    assert left == [], f"left behind after mark failed: {left}"
    assert sigterm_mark(airflow_stack, dag_id).exists(), "the container was not sent SIGTERM first"
    assert len(events.of("create")) == 1
    assert airflow_stack.task(dag_id, run_id)["state"] == "failed"


@pytest.mark.parametrize("repeat", REPEATS)
def test_marked_failed_deferred_with_grace_over_5s_removes_the_container(airflow_stack, docker_api, recorded, repeat):
    dag_id = "dood_sched_kill_deferrable"
    run_id, events = start(airflow_stack, docker_api, dag_id, recorded)
    airflow_stack.wait_for_task(dag_id, run_id, ("deferred",))
    time.sleep(1)  # the triggerer picks the trigger up

    airflow_stack.set_task_state(dag_id, run_id, "failed")

    left = wait_for_no_container(docker_api, dag_id, timeout=GRACE + 30)
    assert left == [], f"left behind after mark failed while deferred: {left}"
    assert sigterm_mark(airflow_stack, dag_id).exists(), "the container was not sent SIGTERM first"
    assert len(events.of("create")) == 1


@pytest.mark.parametrize("mode", ["blocking", "deferrable"])
def test_execution_timeout_sends_sigterm_before_removing_the_container(airflow_stack, docker_api, recorded, mode):
    dag_id = f"dood_sched_timeout_{mode}"
    run_id, events = start(airflow_stack, docker_api, dag_id, recorded)

    task = airflow_stack.wait_for_task(dag_id, run_id, ("failed", "up_for_retry", "success"), timeout=60)

    assert task["state"] == "failed"
    left = wait_for_no_container(docker_api, dag_id, timeout=GRACE + 30)
    assert left == [], f"left behind after execution_timeout: {left}"
    assert sigterm_mark(airflow_stack, dag_id).exists(), "the container was killed without SIGTERM first"
    assert len(events.of("create")) == 1


@pytest.mark.parametrize("repeat", REPEATS)
@pytest.mark.parametrize("output", ["quiet", "chatty"])
def test_orphaned_runner_of_a_killed_supervisor_never_ends_the_container_the_next_try_adopted(
    airflow_stack, docker_api, recorded, output, repeat
):
    dag_id = f"dood_sched_orphan_{output}"
    run_id, events = start(airflow_stack, docker_api, dag_id, recorded)
    task = airflow_stack.wait_for_task(dag_id, run_id, ("running",))
    runner = airflow_stack.task_runner(task["id"])
    supervisor = runner.parent()
    time.sleep(1)

    supervisor.kill()  # SIGKILL: the task runner lives on, orphaned, still following the container
    try:
        time.sleep(1)
        assert runner.is_running(), "the task runner should outlive its supervisor"

        final = airflow_stack.wait_for_task(dag_id, run_id, ("success", "failed"), timeout=120)

        assert final["state"] == "success", airflow_stack.log_tail("scheduler")
        assert final["try_number"] == 2
        assert airflow_stack.xcom(dag_id, run_id) == {"done": True, "try": 1}  # written by try 1's container
        assert len(events.of("create")) == 1  # adopted, never started twice
        assert wait_for_no_container(docker_api, dag_id, timeout=20) == []
    finally:
        try:
            runner.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.mark.parametrize("repeat", REPEATS)
@pytest.mark.parametrize("mode", ["blocking", "deferrable"])
def test_cleared_running_task_removes_its_container_and_the_new_try_runs_a_fresh_one(
    airflow_stack, docker_api, recorded, mode, repeat
):
    dag_id = f"dood_sched_clear_{mode}"
    run_id, events = start(airflow_stack, docker_api, dag_id, recorded)
    airflow_stack.wait_for_task(dag_id, run_id, ("deferred",) if mode == "deferrable" else ("running",))
    time.sleep(1)  # the trap is installed by the container's first line

    airflow_stack.clear_task(dag_id, run_id)

    final = airflow_stack.wait_for_task(dag_id, run_id, ("success", "failed"), timeout=120)
    assert final["state"] == "success", airflow_stack.log_tail("scheduler")
    assert final["try_number"] == 2
    assert airflow_stack.xcom(dag_id, run_id) == {"done": True, "try": 2}  # the fresh container's
    assert sigterm_mark(airflow_stack, dag_id, 1).exists(), "try 1's container was not sent SIGTERM first"
    assert wait_for_no_container(docker_api, dag_id, timeout=GRACE + 30) == []
    assert len(events.of("create")) == 2


@pytest.mark.parametrize("repeat", REPEATS)
def test_triggerer_restarted_mid_wait_the_trigger_resumes_and_the_task_succeeds(
    airflow_stack, docker_api, recorded, repeat
):
    dag_id = "dood_sched_triggerer_restart"
    run_id, events = start(airflow_stack, docker_api, dag_id, recorded)
    airflow_stack.wait_for_task(dag_id, run_id, ("deferred",))
    time.sleep(2)  # the triggerer runs the trigger

    airflow_stack.restart_service("triggerer")

    final = airflow_stack.wait_for_task(dag_id, run_id, ("success", "failed"), timeout=150)
    assert final["state"] == "success", airflow_stack.log_tail("triggerer")
    assert final["try_number"] == 1
    assert airflow_stack.xcom(dag_id, run_id) == {"done": True, "try": 1}
    assert len(events.of("create")) == 1
    assert wait_for_no_container(docker_api, dag_id, timeout=20) == []


@pytest.mark.parametrize("repeat", REPEATS)
@pytest.mark.parametrize("killed", ["runner", "worker"])
def test_worker_sigkilled_mid_training_the_next_try_adopts_the_container(
    airflow_stack, docker_api, recorded, killed, repeat
):
    """`runner`: the task runner alone is SIGKILLed (its supervisor reports the try failed); `worker`: the
    runner and its supervisor (the scheduler times the heartbeat out)."""
    dag_id = f"dood_sched_worker_killed_{killed}"
    run_id, events = start(airflow_stack, docker_api, dag_id, recorded)
    task = airflow_stack.wait_for_task(dag_id, run_id, ("running",))
    runner = airflow_stack.task_runner(task["id"])
    supervisor = runner.parent()
    time.sleep(1)

    if killed == "worker":
        supervisor.kill()
    runner.kill()

    final = airflow_stack.wait_for_task(dag_id, run_id, ("success", "failed"), timeout=150)
    assert final["state"] == "success", airflow_stack.log_tail("scheduler")
    assert final["try_number"] == 2
    assert airflow_stack.xcom(dag_id, run_id) == {"done": True, "try": 1}  # written by try 1's container
    assert len(events.of("create")) == 1  # adopted, never started twice
    assert wait_for_no_container(docker_api, dag_id, timeout=20) == []


@pytest.mark.parametrize("mode", ["blocking", "deferrable"])
def test_container_removed_before_its_outcome_was_read_fails_the_task_saying_so(
    airflow_stack, docker_api, recorded, mode
):
    dag_id = f"dood_sched_removed_{mode}"
    run_id, events = start(airflow_stack, docker_api, dag_id, recorded)
    airflow_stack.wait_for_task(dag_id, run_id, ("deferred",) if mode == "deferrable" else ("running",))
    time.sleep(1)

    docker_api.remove_container(wait_for_running_container(docker_api, dag_id)["Id"], force=True)

    final = airflow_stack.wait_for_task(dag_id, run_id, ("success", "failed"), timeout=90)
    assert final["state"] == "failed"
    log = airflow_stack.task_log(dag_id, run_id, 1)
    assert "was removed before its outcome could be read (it exited with code 137)" in log, log[-3000:]
    assert "No such container" not in log
    assert len(events.of("create")) == 1
    assert engine_containers(docker_api, dag_id) == []
