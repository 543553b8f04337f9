"""Finished trainings must not fail for reasons that are not theirs, under a real scheduler (LocalExecutor,
scheduler, triggerer, api-server: tests/integration/airflow_stack.py):

- the dood config made unreadable (invalid YAML) while two deferrable tasks wait: both finish with their
  results from what their triggers carried, and their containers are removed;
- a deferrable `execution_timeout` whose deadline passes before the container even starts (a slow worker):
  the task fails with the timeout and its container is stopped (one SIGTERM) and removed within the grace
  period, whoever ends the try last (the trigger ends it at its deadline).

Counts and states come from the engine. docs/lifecycle.md's "what happens when" table mirrors these.
"""

from __future__ import annotations

import time

from tests.integration.airflow_stack import MAIN_ENGINE_URL, EngineEvents, engine_containers
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
