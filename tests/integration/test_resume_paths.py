"""Finished trainings must not fail for reasons that are not theirs, under a real scheduler (LocalExecutor,
scheduler, triggerer, api-server: tests/integration/airflow_stack.py):

- the dood config made unreadable (invalid YAML) while two deferrable tasks wait: both finish with their
  results from what their triggers carried, and their containers are removed;
- a deferrable `execution_timeout` whose deadline passes before the container even starts (a slow worker):
  the task fails with the timeout and its container is stopped (one SIGTERM) and removed within the grace
  period, whoever ends the try last (the trigger ends it at its deadline);
- the same broken config while a deferrable `DoodContainerSensor` waits for a handed-off training: the
  sensor succeeds with the result, from what its trigger carried, and removes the container;
- a clear racing the trigger: a deferred task cleared while its trigger cannot act on the clear (the
  triggerer is down, as when it is slow, or when SQLite hands the deleted trigger's id to the next try's
  trigger, which then never runs): the next try never adopts the container the user cleared, whether
  it still runs or already exited 0; it ends it and runs a fresh one.

Counts and states come from the engine. `DOOD_CLEAR_REPEATS=N` repeats each clear case (default 1).
docs/lifecycle.md's "what happens when" table mirrors these.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.integration.airflow_stack import MAIN_ENGINE_URL, EngineEvents, _signal_group, engine_containers
from tests.integration.test_kill_paths import sigterm_mark, wait_for_no_container

GRACE = 6  # as in scheduled_dags/dood_sched_resume.py
SLOW_START_SECONDS = 7  # ditto: the worker's start-up, spent again by the resume (pre_execute)
INVALID_YAML = "runs_root: [this is not: valid yaml\n  policy: {\n"


def test_config_broken_while_two_deferred_tasks_wait_both_finish_with_their_results(airflow_stack, docker_api):
    dag_id = "dood_sched_config_broken_while_waiting"
    tasks = ("train_a", "train_b")
    config = airflow_stack.home / "dood.yaml"
    good = config.read_text()
    events = EngineEvents(MAIN_ENGINE_URL, dag_id)
    try:
        run_id = airflow_stack.trigger(dag_id)
        for task_id in tasks:
            wait_for(airflow_stack, dag_id, run_id, task_id, ("deferred",), timeout=120)
        running = [c for c in engine_containers(docker_api, dag_id) if c["State"] == "running"]
        assert len(running) == 2, f"both trainings should still run when the config breaks: {running}"

        config.write_text(INVALID_YAML)
        broken_at = time.time()

        for task_id in tasks:
            final = wait_for(airflow_stack, dag_id, run_id, task_id, ("success", "failed", "up_for_retry"), 120)
            log = airflow_stack.task_log(dag_id, run_id, 1, task_id)
            assert final["state"] == "success", log[-4000:]
            assert airflow_stack.xcom(dag_id, run_id, task_id) == {"task": task_id, "done": True}
            assert "The dood config cannot be read (Invalid dood config" in log, log[-4000:]
            assert "with what its trigger carried: Docker at unix:///var/run/docker.sock" in log
        assert config.read_text() == INVALID_YAML, "the config was restored before both tasks resumed"
        left = wait_for_no_container(docker_api, dag_id, timeout=20)
        assert left == [], f"left behind after finishing without a config: {left}"
        dies = events.of("die")
        assert len(events.of("create")) == 2 and len(dies) == 2
        assert all(event["Actor"]["Attributes"].get("exitCode") == "0" for event in dies)
        assert all(event["time"] >= int(broken_at) for event in dies), "a container ended before the config broke"
        assert len(events.of("destroy")) == 2
        print(f"config broken at +0 s; both tasks succeeded and {len(events.of('destroy'))} containers were removed")
    finally:
        config.write_text(good)
        events.stop()


def test_deadline_before_the_container_starts_the_task_fails_and_no_container_is_left(airflow_stack, docker_api):
    dag_id = "dood_sched_deadline_before_start"
    for old in (airflow_stack.home / "marks").glob(f"{dag_id}-*"):
        old.unlink()
    events = EngineEvents(MAIN_ENGINE_URL, dag_id)
    try:
        run_id = airflow_stack.trigger(dag_id)
        final = airflow_stack.wait_for_task(dag_id, run_id, ("success", "failed", "up_for_retry"), timeout=120)
        assert final["state"] == "failed", airflow_stack.task_log(dag_id, run_id, 1)[-4000:]

        left = wait_for_no_container(docker_api, dag_id, timeout=GRACE + 15)
        assert left == [], f"left behind after a deadline before the start: {left}"
        started = events.of("start")
        assert len(events.of("create")) == 1 and len(started) == 1
        deadline = _epoch(final["start_date"]) + 5  # the DAG's execution_timeout
        assert started[0]["time"] >= int(deadline), "the container started before the deadline: not the case tested"
        sigterms = [e for e in events.of("kill") if e["Actor"]["Attributes"].get("signal") == "15"]
        assert len(sigterms) == 1, f"one SIGTERM, from one stopper: {events.of('kill')}"
        assert sigterm_mark(airflow_stack, dag_id).exists(), "the container was killed without SIGTERM first"
        airflow_stack._wait_until(lambda: events.of("destroy"), 10, "the engine's destroy event to be recorded")
        (destroyed,) = events.of("destroy")
        started_at, signalled_at, removed_at = (e["timeNano"] / 1e9 for e in (started[0], sigterms[0], destroyed))
        assert removed_at - started_at <= GRACE + 15, "not removed within the grace period and a margin"
        # Ended by whoever fires at the deadline (the trigger), not left to a resume, which first spends the slow
        # worker's start-up again and which Airflow may terminate (before the fix: SIGTERM 11.1 s after start).
        assert signalled_at - started_at < SLOW_START_SECONDS, "the stop waited for the resume"
        log = airflow_stack.task_log(dag_id, run_id, 1)
        failed_at = _epoch(final["end_date"])
        told = "The triggerer is stopping container" in log
        print(
            f"container started {started_at - deadline:.1f} s after the deadline; after its start: SIGTERM "
            f"{signalled_at - started_at:.1f} s, removed {removed_at - started_at:.1f} s, task failed "
            f"{failed_at - started_at:.1f} s; the resume logged the trigger's ending: {told}"
        )
    finally:
        events.stop()


def test_config_broken_while_a_deferred_sensor_waits_it_finishes_with_the_result(airflow_stack, docker_api):
    dag_id = "dood_sched_sensor_config_broken"
    config = airflow_stack.home / "dood.yaml"
    good = config.read_text()
    events = EngineEvents(MAIN_ENGINE_URL, dag_id)
    try:
        run_id = airflow_stack.trigger(dag_id)
        wait_for(airflow_stack, dag_id, run_id, "wait", ("deferred",), timeout=120)
        (training,) = engine_containers(docker_api, dag_id)
        assert training["State"] == "running", "the training should still run when the config breaks"

        config.write_text(INVALID_YAML)
        broken_at = time.time()

        final = wait_for(airflow_stack, dag_id, run_id, "wait", ("success", "failed", "up_for_retry"), 120)
        log = airflow_stack.task_log(dag_id, run_id, final["try_number"], "wait")
        assert final["state"] == "success", log[-4000:]
        assert airflow_stack.xcom(dag_id, run_id, "wait") == {"task": "start", "done": True}
        assert "The dood config cannot be read (Invalid dood config" in log, log[-4000:]
        assert "with what its trigger carried: Docker at unix:///var/run/docker.sock" in log
        assert config.read_text() == INVALID_YAML, "the config was restored before the sensor resumed"
        left = wait_for_no_container(docker_api, dag_id, timeout=20)
        assert left == [], f"left behind after the sensor finished without a config: {left}"
        (die,) = events.of("die")
        assert die["Actor"]["Attributes"].get("exitCode") == "0" and die["time"] >= int(broken_at)
        assert len(events.of("create")) == 1 and len(events.of("destroy")) == 1
        print(f"sensor try {final['try_number']} succeeded without a config; 1 container created, 1 removed")
    finally:
        config.write_text(good)
        events.stop()


@pytest.mark.parametrize("repeat", range(int(os.environ.get("DOOD_CLEAR_REPEATS", "1"))))
@pytest.mark.parametrize("case", ["running", "exited"])
def test_a_clear_racing_the_trigger_never_hands_the_cleared_container_to_the_next_try(
    airflow_stack, docker_api, case, repeat
):
    """`running`: cleared while try 1's container runs; `exited`: after it exited 0, before its trigger fired.
    The triggerer is down meanwhile, so the cleared try's trigger never runs its on_kill (as when SQLite
    reuses the deleted trigger's id: the triggerer takes the next try's trigger for the old one)."""
    dag_id = f"dood_sched_clear_racing_trigger_{case}"
    for old in (airflow_stack.home / "marks").glob(f"{dag_id}-*"):
        old.unlink()
    events = EngineEvents(MAIN_ENGINE_URL, dag_id)
    stopped = False
    try:
        run_id = airflow_stack.trigger(dag_id)
        wait_for(airflow_stack, dag_id, run_id, "run", ("deferred",), timeout=120)
        (first,) = engine_containers(docker_api, dag_id)
        stop_service(airflow_stack, "triggerer")
        stopped = True
        if case == "exited":
            airflow_stack._wait_until(lambda: events.of("die"), 60, "try 1's container to exit")
            assert events.of("die")[0]["Actor"]["Attributes"].get("exitCode") == "0"
        else:
            assert docker_api.inspect_container(first["Id"])["State"]["Running"], "try 1 ended too soon"
        assert airflow_stack.task(dag_id, run_id)["state"] == "deferred", "the trigger fired before the clear"

        airflow_stack.clear_task(dag_id, run_id)
        cleared_at = time.time()

        airflow_stack._wait_until(
            lambda: (
                airflow_stack.task(dag_id, run_id)["try_number"] == 2
                and airflow_stack.task(dag_id, run_id)["state"] == "deferred"
            ),
            120,
            "try 2 to defer (no triggerer runs)",
        )
        decided = time.time() - cleared_at
        start_service(airflow_stack, "triggerer")
        stopped = False

        final = wait_for(airflow_stack, dag_id, run_id, "run", ("success", "failed"), timeout=120)
        logs = {n: try_log(airflow_stack, dag_id, run_id, n) for n in range(2, final["try_number"] + 1)}
        assert final["state"] == "success", logs[final["try_number"]][-4000:]
        cleared_name = first["Names"][0].lstrip("/")
        assert "was cleared by a user: never adopted" in logs[2], logs[2][-4000:]
        for try_number, log in logs.items():
            assert f"Reattaching to container {cleared_name}" not in log, f"try {try_number} adopted it"
        # Tries after 2 are retries of the new series (Airflow 3.3 can fail a resume on the deferring worker's
        # late executor event, as in test_handoff.py): they may adopt try 2's container, never try 1's.
        assert airflow_stack.xcom(dag_id, run_id) == {"done": True, "try": 2}, "the cleared container's result"
        left = wait_for_no_container(docker_api, dag_id, timeout=GRACE + 30)
        assert left == [], f"left behind: {left}"
        assert len(events.of("create")) == 2, "a fresh container for try 2"
        if case == "running":
            assert sigterm_mark(airflow_stack, dag_id, 1).exists(), "the cleared container was not sent SIGTERM"
        removed = [e for e in events.of("destroy") if e["id"] == first["Id"]]
        assert removed, "the cleared try's container was not removed"
        print(
            f"[{case}] try 2 decided {decided:.1f} s after the clear; created {len(events.of('create'))}, "
            f"cleared container removed {removed[0]['timeNano'] / 1e9 - cleared_at:.1f} s after the clear; "
            f"succeeded in try {final['try_number']}"
        )
    finally:
        if stopped:
            start_service(airflow_stack, "triggerer")
        events.stop()


def try_log(stack, dag_id: str, run_id: str, try_number: int, task_id: str = "run") -> str:
    """A try's task log as its file holds it: the REST API answers 404 for a try Airflow failed on a late
    executor event and retried at once (seen here for try 2 of 3 with Airflow 3.3.2)."""
    path = stack.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
    return (path / f"attempt={try_number}.log").read_text(errors="replace")


def stop_service(stack, service: str) -> None:
    """Stop one Airflow service as an operator would (SIGTERM to its group, SIGKILL after 30 s)."""
    process = stack.processes[service]
    _signal_group(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired: it did not stop in time
        _signal_group(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def start_service(stack, service: str) -> None:
    stack._start_service(service)
    stack._wait_until(stack._healthy, 180, f"the Airflow services to be healthy after starting {service}")


def wait_for(stack, dag_id: str, run_id: str, task_id: str, states: tuple[str, ...], timeout: float) -> dict:
    """`AirflowStack.wait_for_task` for a task other than `run`."""
    found: dict = {}

    def reached() -> bool:
        found.update(stack.task(dag_id, run_id, task_id))
        return found.get("state") in states

    stack._wait_until(reached, timeout, f"{dag_id}/{run_id}/{task_id} to reach {states} (last: {found.get('state')})")
    return found


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
