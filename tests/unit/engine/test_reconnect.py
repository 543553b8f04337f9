"""dood.engine.reconnect without an engine: the bound, the message, and telling a daemon's shutdown from other kills."""

from __future__ import annotations

import time

import pytest
import requests

from dood.engine.reconnect import Backoff, Outages, Reconnector, explain_unreachable, is_unreachable
from dood.exceptions import DockerUnreachable


def test_an_outage_explains_a_kill_within_it_or_just_before_it():
    outages = Outages([(1000.0, 1010.0)])
    assert outages.killed_by_shutdown(137, False, 1005.0)
    assert outages.killed_by_shutdown(143, False, 995.0)  # a wait opened earlier reported it first
    assert not outages.killed_by_shutdown(137, True, 1005.0)  # the kernel's OOM killer
    assert not outages.killed_by_shutdown(1, False, 1005.0)  # the step's own failure
    assert not outages.killed_by_shutdown(137, False, 1011.0)  # killed after the daemon was back: a user
    assert not outages.killed_by_shutdown(137, False, 900.0)  # long before
    assert not Outages().killed_by_shutdown(137, False, 1005.0)  # no outage seen


def test_waits_with_backoff_until_the_daemon_answers_again():
    answers = iter([requests.exceptions.ConnectionError("refused"), ConnectionResetError(), "OK"])
    slept = []

    def ping():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    reconnect = Reconnector("unix:///nowhere.sock", 60, sleep=slept.append)
    reconnect.until_back(requests.exceptions.ConnectionError("aborted"), ping)
    assert len(slept) == 3
    assert reconnect.outages.down_since is None and len(reconnect.outages.periods) == 1


def test_gives_up_after_the_budget_saying_since_when(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])

    def sleep(seconds):
        now[0] += seconds

    def ping():
        raise requests.exceptions.ConnectionError("refused")

    reconnect = Reconnector("unix:///nowhere/docker.sock", 30, sleep=sleep)
    with pytest.raises(DockerUnreachable, match=r"Docker daemon unreachable since \d{4}-\d\d-\d\dT.*gave up after 30s"):
        reconnect.until_back(requests.exceptions.ConnectionError("refused"), ping)
    assert now[0] == pytest.approx(1030.0)


def test_other_errors_are_not_waited_for():
    assert is_unreachable(requests.exceptions.ConnectionError())
    assert not is_unreachable(ValueError("a bug"))
    reconnect = Reconnector("unix:///nowhere.sock", 60, sleep=lambda _: None)
    with pytest.raises(ValueError):
        reconnect.call(lambda: (_ for _ in ()).throw(ValueError("a bug")))


def test_a_missing_socket_of_a_daemon_that_answered_before_is_a_restart_not_a_missing_mount(tmp_path):
    url = f"unix://{tmp_path}/docker.sock"
    assert "does not exist" in explain_unreachable(url)
    restarting = explain_unreachable(url, answered_before=True)
    assert "does not exist" not in restarting
    assert "shuts down or restarts" in restarting


def test_backoff_grows_and_stops_at_the_budget(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    backoff = Backoff(budget_seconds=5)
    delays = []
    while (delay := backoff.next_delay()) is not None:
        delays.append(delay)
        now[0] += delay
    assert 0.25 <= delays[0] <= 0.5
    assert sum(delays) == pytest.approx(5)
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_backoff_can_run_on_a_clock_of_its_own():
    now = [50.0]
    backoff = Backoff(budget_seconds=3, clock=lambda: now[0])
    total = 0.0
    while (delay := backoff.next_delay()) is not None:
        total += delay
        now[0] += delay
    assert total == pytest.approx(3)
