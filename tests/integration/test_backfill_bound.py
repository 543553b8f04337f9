"""Trainings stay bounded for every kind of run (issue 11.4): a 6-date backfill whose own limit is 6, under a
real scheduler, never runs more train containers at once than the pipeline's bound (2), counted from the
engine's start/die events, recorded as they happen (not asked of the engine's 256-event buffer afterwards: on
a shared engine, other tests' events can push them out)."""

from __future__ import annotations

import time

import pytest

from tests.integration.airflow_stack import MAIN_ENGINE_URL, EngineEvents

DAG_ID = "dood_sched_bound"
BOUND = 2  # the pipeline's max_active_runs, hence every step's max_active_tis_per_dag


def most_at_once(events: list[dict]) -> int:
    """The largest number of containers running at the same time, from their start and die events."""
    running, most = 0, 0
    for event in sorted(events, key=lambda e: (e["timeNano"], e["Action"] == "start")):
        running += 1 if event["Action"] == "start" else -1
        most = max(most, running)
    return most


@pytest.mark.timeout(900)  # a real scheduler starting up, parsing, then 7 runs x 3 steps on 2 cores
def test_a_backfill_never_runs_more_trainings_at_once_than_the_bound(airflow_stack, docker_api):
    events = EngineEvents(MAIN_ENGINE_URL, DAG_ID)
    try:
        _backfill(airflow_stack)
    finally:
        events.stop()
    trains = [e for e in events.of("start") + events.of("die") if e["Actor"]["Attributes"]["dood.task_id"] == "train"]
    assert len([e for e in trains if e["Action"] == "start"]) >= 6  # every backfilled date trained
    assert most_at_once(trains) <= BOUND, trains
    assert len(events.of("create")) >= 18  # prepare, train, evaluate of each date


def _backfill(airflow_stack) -> None:
    """Unpause, wait for the scheduled run, create the 6-date backfill, wait until all 6 runs succeeded."""
    airflow_stack._wait_until(lambda: _parsed(airflow_stack), 120, f"{DAG_ID} to be parsed")
    airflow_stack.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})  # paused DAGs run no task at all
    # Unpaused, the scheduler creates today's scheduled run at once; a backfill created in the same moment
    # crashed Airflow 3.3's scheduler on SQLite (StaleDataError / a deleted DagRun, 2 of 3 runs on 2026-12-02)
    airflow_stack._wait_until(lambda: _scheduled_run(airflow_stack), 120, f"{DAG_ID}'s scheduled run", every=1)
    body = {"dag_id": DAG_ID, "from_date": "2026-01-01T00:00:00Z", "to_date": "2026-01-06T00:00:00Z"}
    for _ in range(60):  # SQLite answers 503 "Database is locked" while the scheduler writes: ask again
        try:
            airflow_stack.api("POST", "/backfills", json={**body, "max_active_runs": 6})  # the backfill's own: 6
            break
        except AssertionError as exc:
            if " 503 " not in str(exc):
                raise
            time.sleep(0.5)
    else:
        pytest.fail("the backfill could not be created: SQLite stayed locked for 30 s")

    def backfill_done() -> bool:
        runs = airflow_stack.api("GET", f"/dags/{DAG_ID}/dagRuns")["dag_runs"]
        backfilled = [r for r in runs if r["run_type"] == "backfill"]
        return len(backfilled) == 6 and all(r["state"] in ("success", "failed") for r in backfilled)

    airflow_stack._wait_until(backfill_done, 600, "six finished backfill runs", every=2)
    runs = airflow_stack.api("GET", f"/dags/{DAG_ID}/dagRuns")["dag_runs"]
    assert all(r["state"] == "success" for r in runs if r["run_type"] == "backfill"), runs


def _parsed(stack) -> bool:
    try:
        stack.api("GET", f"/dags/{DAG_ID}")
        return True
    except AssertionError:
        return False


def _scheduled_run(stack) -> bool:
    return any(r["run_type"] == "scheduled" for r in stack.api("GET", f"/dags/{DAG_ID}/dagRuns")["dag_runs"])
