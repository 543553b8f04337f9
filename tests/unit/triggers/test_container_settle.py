"""DoodContainerTrigger holds an outcome back until `resume_not_before` (`settle_seconds` after the task
deferred), without an engine: Airflow 3.3 fails a try resumed before the executor's report that its deferring
worker exited was processed (tests/integration/test_kill_paths.py meets it when a container ends quickly)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from dood.config.model import parse_config
from dood.lifecycle.outcome import wait_event
from dood.triggers.container import RESUME_SETTLE_SECONDS, DoodContainerTrigger


def _first_event(trigger: DoodContainerTrigger, outcome: dict, monkeypatch) -> tuple[dict, float]:
    """The payload `run` yields when the container's wait ends with `outcome` at once, and how long it took."""

    async def ended():
        return outcome

    monkeypatch.setattr(trigger, "wait", ended)

    async def first():
        async for event in trigger.run():
            return event.payload

    started = time.monotonic()
    payload = asyncio.run(first())
    return payload, time.monotonic() - started


def test_from_config_holds_outcomes_until_the_settle_time_after_the_deferral():
    before = time.time()
    trigger = DoodContainerTrigger.from_config(parse_config({}), "abc")
    assert trigger.resume_not_before is not None
    assert before + RESUME_SETTLE_SECONDS <= trigger.resume_not_before <= time.time() + RESUME_SETTLE_SECONDS
    assert DoodContainerTrigger.from_config(parse_config({}), "abc", settle_seconds=None).resume_not_before is None


def test_the_hold_is_absolute_and_survives_a_triggerer_restart():
    _, kwargs = DoodContainerTrigger(container_id="abc", settle_seconds=30).serialize()
    assert "settle_seconds" not in kwargs
    time.sleep(0.01)
    again = DoodContainerTrigger(**json.loads(json.dumps(kwargs)))
    assert again.resume_not_before == kwargs["resume_not_before"]  # the clock does not restart
    old = {key: value for key, value in kwargs.items() if key != "resume_not_before"}  # deferred by an earlier dood
    assert DoodContainerTrigger(**old).resume_not_before is None


@pytest.mark.parametrize("status", ["success", "failed", "error"])
def test_an_outcome_soon_after_the_deferral_waits_for_the_settle_time(status, monkeypatch):
    trigger = DoodContainerTrigger(container_id="abc", resume_not_before=time.time() + 0.5)
    payload, took = _first_event(trigger, {"status": status, "container_id": "abc"}, monkeypatch)
    assert payload["status"] == status
    assert took >= 0.45, f"yielded after {took:.2f}s, before resume_not_before"


def test_an_outcome_after_the_settle_time_is_not_held(monkeypatch):
    trigger = DoodContainerTrigger(container_id="abc", resume_not_before=time.time() - 1)
    _, took = _first_event(trigger, {"status": "success", "container_id": "abc"}, monkeypatch)
    assert took < 0.4


def test_a_timeout_is_never_held(monkeypatch):
    trigger = DoodContainerTrigger(container_id="abc", resume_not_before=time.time() + 30)
    payload, took = _first_event(trigger, wait_event("timeout", "abc", "still running"), monkeypatch)
    assert payload["status"] == "timeout"
    assert took < 5


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"resume_not_before": 1.0, "settle_seconds": 5}, "not both"),
        ({"settle_seconds": -1}, "settle_seconds"),
    ],
)
def test_invalid_settle_arguments_say_which_and_how(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        DoodContainerTrigger(container_id="abc", **kwargs)
