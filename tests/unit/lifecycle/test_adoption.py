"""Which earlier try's container a try adopts, with Docker replaced (the real-scheduler cases:
tests/integration/test_resume_paths.py, test_kill_paths.py): never one of a try a user cleared (before the
series' first try, from Airflow's `max_tries`), which is ended instead; a retry's as before."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import dood.lifecycle.adoption as adoption
from dood.config.model import DoodConfig
from dood.lifecycle.adoption import adoptable, first_try
from dood.naming import TaskIdentity

CONFIG = DoodConfig(runs_root="/runs")


def _ti(try_number: int, max_tries: int) -> dict:
    return {"ti": SimpleNamespace(try_number=try_number, max_tries=max_tries)}


@pytest.mark.parametrize(
    ("try_number", "max_tries", "retries", "expected"),
    [
        (1, 0, 0, 1),  # a first try
        (2, 1, 1, 1),  # a retry: the series began with try 1
        (3, 2, 2, 1),
        (2, 1, 0, 2),  # cleared after try 1 (max_tries = 1 + 0): try 2 begins a series
        (2, 2, 1, 2),  # cleared after try 1 with retries=1 (max_tries = 1 + 1)
        (3, 2, 1, 2),  # and its retry
        (5, 5, 1, 5),  # cleared again and again
    ],
)
def test_the_first_try_of_the_series_is_the_one_after_the_last_clear(try_number, max_tries, retries, expected):
    assert first_try(_ti(try_number, max_tries), retries) == expected


def test_a_task_instance_that_does_not_say_counts_from_try_1():
    assert first_try({"ti": SimpleNamespace(try_number=3)}, 1) == 1


class FakeHook:
    def __init__(self, containers: list[dict], killed: set[str] = frozenset()) -> None:
        self.containers = containers
        self.killed = killed
        self.api = SimpleNamespace(inspect_container=lambda cid: {"State": {"ExitCode": 0}})

    def find_containers(self, labels: dict[str, str]) -> list[dict]:
        return [c for c in self.containers if all(c["Labels"].get(k) == v for k, v in labels.items())]


def _container(try_number: int, state: str, created: int) -> dict:
    identity = TaskIdentity(dag_id="d", task_id="t", run_id="r", try_number=try_number)
    return {
        "Id": f"id{try_number}",
        "Names": [f"/{identity.container_name()}"],
        "Labels": identity.labels(),
        "State": state,
        "Status": state,
        "Created": created,
    }


@pytest.fixture
def detached(monkeypatch):
    """The stop-then-remove processes started, as (container, grace, who); nothing waits in settle."""
    started: list[tuple[str, int, str]] = []
    monkeypatch.setattr(
        adoption,
        "detach",
        lambda target, container, grace, *, runs_root=None, who=None: (
            started.append((container, grace, who)) or SimpleNamespace(pid=1)
        ),
    )
    monkeypatch.setattr(adoption.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(adoption, "being_ended", lambda api, c: c["Id"] in api.killed)
    return started


def _hook(*containers: dict, killed: set[str] = frozenset()) -> FakeHook:
    hook = FakeHook(list(containers))
    hook.api.killed = killed
    return hook


@pytest.mark.parametrize("state", ["running", "exited"])
def test_the_container_of_a_cleared_try_is_never_adopted_and_is_ended(detached, state):
    hook = _hook(_container(1, state, 100))
    try_2 = TaskIdentity(dag_id="d", task_id="t", run_id="r", try_number=2)
    assert adoptable(hook, try_2, CONFIG, since_try=2, grace_seconds=6) is None
    ((container, grace, who),) = detached
    assert container == "id1" and grace == (6 if state == "running" else 0)
    assert who == "a clear of its task (try 1), in the next try"


def test_a_retry_still_adopts_its_series_running_container(detached):
    hook = _hook(_container(2, "running", 100), _container(1, "exited", 50))
    try_3 = TaskIdentity(dag_id="d", task_id="t", run_id="r", try_number=3)
    handle = adoptable(hook, try_3, CONFIG, since_try=2, grace_seconds=6)
    assert handle is not None and handle.container_id == "id2"
    assert [c for c, _, _ in detached] == ["id1"]  # try 1 was cleared: removed, never adopted


def test_a_cleared_container_someone_is_ending_or_kept_by_auto_remove_never_is_left_alone(detached):
    hook = _hook(_container(1, "running", 100), _container(2, "exited", 150), killed={"id1"})
    try_3 = TaskIdentity(dag_id="d", task_id="t", run_id="r", try_number=3)
    assert adoptable(hook, try_3, CONFIG, since_try=3, keep_exited=True) is None
    assert detached == []
