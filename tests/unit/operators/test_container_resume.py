"""The deferred operator's resume, with Docker and Airflow replaced (the real-engine and real-scheduler
cases: tests/integration/test_resume_paths.py): a timeout the trigger already ends is not stopped twice, and
a deferral Airflow timed out before its trigger ran still ends the container."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR, TriggerFailureReason
from airflow.sdk.exceptions import AirflowTaskTimeout, TaskDeferralError, TaskDeferralTimeout
from docker.errors import NotFound

import dood.operators.container as operator_module
from dood import DoodContainerOperator
from dood.config.model import parse_config
from dood.lifecycle.outcome import ENDING_KEY, RESUME_KEY, wait_event

CONTAINER_ID = "c" * 64
HANDLE = {"container_id": CONTAINER_ID, "container_name": "dood-d-t-t1-abc", "run_dir": "/runs/dood-d-t-t1-abc"}


class FakeApi:
    def __init__(self, names: dict[str, str]) -> None:
        self.names = names

    def inspect_container(self, name: str) -> dict:
        if name not in self.names:
            raise NotFound(f"No such container: {name}")
        return {"Id": self.names[name], "Name": f"/{name}"}


@pytest.fixture
def ended(monkeypatch):
    """The operator's environment: a config, a hook on a fake engine; returns the containers it ended."""
    calls: list[tuple[str, str]] = []
    api = FakeApi({HANDLE["container_name"]: CONTAINER_ID})
    monkeypatch.setattr(operator_module, "load_config", lambda path=None: parse_config({}))
    monkeypatch.setattr(
        operator_module, "DoodHook", lambda config, answered_before=False: SimpleNamespace(api=api, stack="dood")
    )
    monkeypatch.setattr(
        DoodContainerOperator,
        "_end_container",
        lambda self, container_id, reason, *, leave_if_running: calls.append((container_id, reason)) or True,
    )
    return calls


def context(try_number: int = 1) -> dict:
    ti = SimpleNamespace(dag_id="d", task_id="t", run_id="r", map_index=-1, try_number=try_number, start_date=None)
    return {"ti": ti}


def make() -> DoodContainerOperator:
    return DoodContainerOperator(task_id="t", image="img", deferrable=True)


def test_a_timeout_the_trigger_already_ends_is_not_stopped_a_second_time(ended):
    event = wait_event("timeout", CONTAINER_ID, "still running at the deadline")
    event[ENDING_KEY] = "The triggerer is stopping container cccccccccccc (grace 6s), then removing it, in pid 7"
    with pytest.raises(AirflowTaskTimeout):
        make().execute_complete(context(), event, HANDLE)
    assert ended == []


def test_a_timeout_from_an_older_trigger_is_stopped_by_the_resume(ended):
    event = wait_event("timeout", CONTAINER_ID, "still running at the deadline")
    with pytest.raises(AirflowTaskTimeout):
        make().execute_complete(context(), event, HANDLE)
    assert ended == [(CONTAINER_ID, "execution_timeout")]


def test_a_resume_with_an_unreadable_config_and_an_old_event_fails_saying_what_is_missing(monkeypatch, ended):
    from dood.exceptions import DoodConfigError

    def broken(path=None):
        raise DoodConfigError("Invalid dood config /x.yaml: not valid YAML: boom")

    monkeypatch.setattr(operator_module, "load_config", broken)
    event = {**wait_event("success", CONTAINER_ID, "exited with code 0.", exit_code=0)}
    assert RESUME_KEY not in event
    with pytest.raises(DoodConfigError, match="does not carry the Docker endpoint"):
        make().execute_complete(context(), event, HANDLE)


def test_a_deferral_airflow_timed_out_before_the_trigger_ran_ends_the_container(monkeypatch, ended):
    from dood.naming import TaskIdentity

    name = TaskIdentity.from_context(context(), stack="dood").container_name()
    api = FakeApi({name: CONTAINER_ID})
    monkeypatch.setattr(
        operator_module, "DoodHook", lambda config, answered_before=False: SimpleNamespace(api=api, stack="dood")
    )
    with pytest.raises(TaskDeferralTimeout):
        make().resume_execution(TRIGGER_FAIL_REPR, {"error": TriggerFailureReason.TRIGGER_TIMEOUT}, context())
    assert ended == [(CONTAINER_ID, "execution_timeout")]


def test_a_timed_out_deferral_without_a_container_or_a_trigger_failure_ends_nothing(ended):
    with pytest.raises(TaskDeferralTimeout):  # no container of this try exists
        make().resume_execution(TRIGGER_FAIL_REPR, {"error": TriggerFailureReason.TRIGGER_TIMEOUT}, context())
    with pytest.raises(TaskDeferralError):  # the trigger failed: its try fails, Airflow's retries may adopt
        make().resume_execution(TRIGGER_FAIL_REPR, {"error": "Trigger failure"}, context())
    assert ended == []


def test_a_resume_by_another_containers_event_waits_again_for_its_own_and_ends_nothing(ended):
    """A task cleared while deferred: on SQLite its next try's trigger can get the deleted trigger's id, and
    the old trigger, still running, then fires under it for the cleared container. Not this try's outcome."""
    from airflow.sdk.exceptions import TaskDeferred

    for status in ("success", "timeout"):
        event = wait_event(status, "d" * 64, "exited with code 0.", exit_code=0)
        with pytest.raises(TaskDeferred) as deferred:
            make().execute_complete(context(2), event, HANDLE)
        assert deferred.value.trigger.container_id == CONTAINER_ID
        assert deferred.value.kwargs == {"handle": HANDLE}
    assert ended == []
