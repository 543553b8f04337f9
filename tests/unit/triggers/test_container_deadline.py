"""DoodContainerTrigger at its deadline and what its events carry for the resume, without an engine: the
teardown it starts is recorded, not run (`dood.lifecycle.teardown.detach` replaced)."""

from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace

import pytest

import dood.triggers.container as container_trigger
from dood.engine.target import DockerTarget
from dood.lifecycle.outcome import ENDING_KEY, RESUME_KEY
from dood.triggers.container import DoodContainerTrigger

CARRY = {
    "handle": {"container_id": "c" * 64, "container_name": "dood-d-t-r-1-abc", "run_dir": "/runs/dood-d-t-r-1-abc"},
    "max_result_bytes": 2048,
    "auto_remove": "always",
    "log_lines_per_record": 100,
    "stop_grace_seconds": 6,
    "docker_timeout_seconds": 120,
    "stack": "dood",
}


@pytest.fixture
def detached(monkeypatch):
    """Every teardown a trigger starts: (target url, container, grace, runs_root, who)."""
    started: list[tuple] = []

    def detach(target, container, grace, *, runs_root=None, who=None):
        started.append((target.url, container, grace, runs_root, who))
        return SimpleNamespace(pid=4242)

    monkeypatch.setattr(container_trigger, "detach", detach)
    return started


def _trigger(**kwargs) -> DoodContainerTrigger:
    return DoodContainerTrigger(container_id="c" * 64, target=DockerTarget("tcp://proxy:2375"), **kwargs)


def test_a_deadline_already_passed_ends_the_container_it_owns_and_says_so(detached):
    trigger = _trigger(deadline=time.time() - 5, stop_grace_seconds=6, resume=CARRY)
    event = asyncio.run(trigger.wait())
    assert event["status"] == "timeout"
    assert detached == [
        ("tcp://proxy:2375", "c" * 64, 6, "/runs", "its deadline (execution_timeout), in the triggerer")
    ]
    assert "stopping container cccccccccccc (grace 6s), then removing it, in pid 4242" in event[ENDING_KEY]


def test_a_waiter_that_does_not_own_the_container_leaves_it_at_the_deadline(detached):
    event = asyncio.run(_trigger(deadline=time.time() - 5, stop_grace_seconds=None).wait())
    assert event["status"] == "timeout" and ENDING_KEY not in event
    assert detached == []


def test_a_teardown_that_cannot_start_leaves_the_ending_to_the_resume(monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("no python here")

    monkeypatch.setattr(container_trigger, "detach", broken)
    event = asyncio.run(_trigger(deadline=time.time() - 5, stop_grace_seconds=6).wait())
    assert event["status"] == "timeout" and ENDING_KEY not in event


def test_a_wait_cancelled_after_its_deadline_ends_the_container(detached, monkeypatch):
    """Airflow's scheduler times the deferral out (same deadline) and cancels the trigger without on_kill."""
    trigger = _trigger(deadline=time.time() + 0.2, stop_grace_seconds=6)

    async def forever(remaining):
        await asyncio.sleep(60)

    monkeypatch.setattr(trigger, "_wait_until", forever)

    async def cancel_after_deadline():
        task = asyncio.ensure_future(trigger.wait())
        await asyncio.sleep(0.4)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_after_deadline())
    assert [entry[1] for entry in detached] == ["c" * 64]


def test_a_wait_cancelled_before_its_deadline_leaves_the_container_to_on_kill(detached, monkeypatch):
    trigger = _trigger(deadline=time.time() + 60, stop_grace_seconds=6)

    async def forever(remaining):
        await asyncio.sleep(60)

    monkeypatch.setattr(trigger, "_wait_until", forever)

    async def cancel_now():
        task = asyncio.ensure_future(trigger.wait())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_now())
    assert detached == []


def test_every_event_carries_the_resume_with_the_endpoint_handed_over(detached):
    trigger = _trigger(deadline=time.time() - 1, stop_grace_seconds=None, resume=CARRY, retry_budget_seconds=45)
    trigger.target = DockerTarget("unix:///run/dood/proxy.sock")  # what `_reach_host` may change in the triggerer

    async def first_event():
        async for event in trigger.run():
            return event.payload

    payload = asyncio.run(first_event())
    assert payload[RESUME_KEY] == {
        **CARRY,
        "docker": {
            "url": "tcp://proxy:2375",
            "api_version": "auto",
            "tls_ca_cert": None,
            "tls_client_cert": None,
            "tls_client_key": None,
            "unreachable_timeout_seconds": 45.0,
        },
    }
    json.dumps(payload)  # stored by the triggerer: plain JSON


def test_the_resume_survives_serialization_and_an_old_trigger_carries_none():
    _, kwargs = _trigger(resume=CARRY).serialize()
    assert DoodContainerTrigger(**json.loads(json.dumps(kwargs))).resume == CARRY
    old = {key: value for key, value in kwargs.items() if key != "resume"}  # deferred by an earlier dood
    assert DoodContainerTrigger(**old)._for_resume({"status": "success"}) == {"status": "success"}
