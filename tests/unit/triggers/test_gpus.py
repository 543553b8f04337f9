"""DoodGpuTrigger without an engine: it survives the trip through the triggerer's database, keeping the task's
place in the queue (its ticket) and its absolute deadline; a row of the previous release still constructs; while
Docker does not answer it looks again with `dood.engine.reconnect.Backoff` (Docker replaced by stubs there)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from importlib import import_module

import aiodocker
import aiohttp
import pytest

import dood.triggers.gpus as gpus_module
from dood.config.model import parse_config
from dood.engine.reconnect import MAX_RETRY_SECONDS, Backoff
from dood.engine.target import FLAT_KWARGS, DockerTarget
from dood.triggers.gpus import CLASSPATH, UNREACHABLE_SECONDS, DoodGpuTrigger


def _trigger(**overrides) -> DoodGpuTrigger:
    config = parse_config({"docker": {"url": "tcp://dood-proxy:2375"}, "gpus": {"devices": ["0", "1"]}})
    kwargs = {
        "ticket": "00001800000000000000000",
        "wanted": "all",
        "image": "trainer:1",
        "user": "50000:0",
        "waiter": "dood/dag/train/run/-1",
        "labels": {"dood.managed": "true", "dood.stack": "dood"},
        "deadline": 1_900_000_000.5,
        **overrides,
    }
    return DoodGpuTrigger.from_config(config, **kwargs)


def test_serialize_round_trips_through_json():
    trigger = _trigger()
    classpath, kwargs = trigger.serialize()
    assert classpath == CLASSPATH == "dood.triggers.gpus.DoodGpuTrigger"
    restored = json.loads(json.dumps(kwargs))  # plain JSON types only
    assert DoodGpuTrigger(**restored).serialize() == (classpath, kwargs)
    assert kwargs["ticket"] == "00001800000000000000000" and kwargs["deadline"] == 1_900_000_000.5
    assert kwargs["devices"] == ["0", "1"] and kwargs["target"]["url"] == "tcp://dood-proxy:2375"
    assert kwargs["target"] == DockerTarget("tcp://dood-proxy:2375").as_dict()  # one value, a plain dict
    assert kwargs["lease_seconds"] == 120 and kwargs["recheck_seconds"] == 10


def test_classpath_imports_the_class():
    module, _, name = CLASSPATH.rpartition(".")
    assert getattr(import_module(module), name) is DoodGpuTrigger


@pytest.mark.parametrize("wanted", [0, -1, "2", "some"])
def test_a_request_for_no_gpu_is_refused(wanted):
    with pytest.raises(ValueError, match="wanted"):
        _trigger(wanted=wanted)


def test_the_payload_names_the_ticket_and_the_deadline():
    payload = _trigger()._payload("timeout", "No GPUs")
    assert payload == {
        "status": "timeout",
        "ticket": "00001800000000000000000",
        "message": "No GPUs",
        "deadline": "2030-03-17T17:46:40.500000+00:00",
    }


def test_without_gpus_devices_the_trigger_takes_what_this_process_discovered():
    from dood.exceptions import DoodConfigError
    from dood.gpus.discovery import _FOUND, Discovered

    url = "tcp://dood-proxy-discovering:2375"
    config = parse_config({"docker": {"url": url}})
    kwargs = {"ticket": "1", "wanted": 1, "image": "t:1", "user": None, "waiter": "", "labels": {}, "deadline": None}
    with pytest.raises(DoodConfigError, match="no GPU inventory"):
        DoodGpuTrigger.from_config(config, **kwargs)
    _FOUND[url] = Discovered(("0", "1", "2"), "probe")
    try:
        assert DoodGpuTrigger.from_config(config, **kwargs).devices == ("0", "1", "2")
    finally:
        del _FOUND[url]


#: What the previous release's serialize() returned (the endpoint as five flat kwargs), as its trigger rows hold it.
PREVIOUS_RELEASE_ROW = {
    "ticket": "00001800000000000000000",
    "wanted": 2,
    "devices": ["0", "1"],
    "image": "trainer:1",
    "user": "50000:0",
    "waiter": "dood/dag/train/run/-1",
    "labels": {"dood.managed": "true", "dood.stack": "dood"},
    "docker_url": "tcp://dood-proxy:2375",
    "api_version": "1.41",
    "deadline": 1900000000.5,
    "lease_seconds": 120.0,
    "recheck_seconds": 10.0,
    "created_hold_seconds": 120.0,
    "tls_ca_cert": "/certs/ca.pem",
    "tls_client_cert": "/certs/cert.pem",
    "tls_client_key": "/certs/key.pem",
}


def test_a_trigger_row_of_the_previous_release_constructs_and_serializes_the_new_way():
    """An upgrade with tasks deferred on GPUs: the triggerer builds their triggers from the old release's rows."""
    trigger = DoodGpuTrigger(**json.loads(json.dumps(PREVIOUS_RELEASE_ROW)))
    assert trigger.target == DockerTarget(
        "tcp://dood-proxy:2375", "1.41", "/certs/ca.pem", "/certs/cert.pem", "/certs/key.pem"
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == CLASSPATH
    assert kwargs == {
        **{k: v for k, v in PREVIOUS_RELEASE_ROW.items() if k not in FLAT_KWARGS},
        "target": {
            "url": "tcp://dood-proxy:2375",
            "api_version": "1.41",
            "tls_ca_cert": "/certs/ca.pem",
            "tls_client_cert": "/certs/cert.pem",
            "tls_client_key": "/certs/key.pem",
        },
    }
    again = DoodGpuTrigger(**json.loads(json.dumps(kwargs)))
    assert again.serialize() == (classpath, kwargs) and again.target == trigger.target


def test_an_endpoint_given_twice_or_not_at_all_is_refused():
    row = {k: v for k, v in PREVIOUS_RELEASE_ROW.items() if k not in FLAT_KWARGS}
    with pytest.raises(ValueError, match="DoodGpuTrigger: give target=.* or the previous release's docker_url"):
        DoodGpuTrigger(**row, target=DockerTarget("tcp://a:2375"), docker_url="tcp://b:2375")
    with pytest.raises(ValueError, match=r"DoodGpuTrigger: target is required \(DockerTarget.of\(config.docker\)\)"):
        DoodGpuTrigger(**row)


# -- Docker not answering: the wait looks again with Backoff, and gives up after UNREACHABLE_SECONDS ----------------


class _Clock:
    """Monotonic seconds for the trigger's Backoff, moved on by its sleeps (recorded) rather than waited out."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now


class _Log:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, message: str, *args) -> None:
        self.warnings.append(message % args)

    def info(self, *args) -> None:
        pass


@pytest.fixture
def clock(monkeypatch):
    clock = _Clock()
    real_sleep = asyncio.sleep

    async def sleep(seconds):
        clock.slept.append(seconds)
        clock.now += seconds
        await real_sleep(0)

    monkeypatch.setattr(gpus_module, "Backoff", functools.partial(Backoff, clock=clock.monotonic))
    monkeypatch.setattr(asyncio, "sleep", sleep)
    return clock


def _waiting(**stubs) -> tuple[DoodGpuTrigger, _Log]:
    """A trigger whose Docker calls are the given stubs (no engine: `_wait` is given no session)."""
    trigger = _trigger(deadline=None)
    log = trigger._log = _Log()  # type: ignore[assignment]
    for name, stub in stubs.items():
        setattr(trigger, name, stub)
    return trigger, log


UNREACHABLE = {
    "status": "error",
    "ticket": "00001800000000000000000",
    "message": "Docker at tcp://dood-proxy:2375 stayed unreachable while waiting for GPUs.",
    "deadline": None,
}


def test_an_engine_that_never_answers_is_retried_with_backoff_then_the_wait_fails(clock):
    problems = [
        OSError(111, "Connection refused"),
        aiodocker.DockerError(900, {"message": "Cannot connect to Docker"}),
        aiohttp.ClientConnectionError("Connection reset"),
        aiodocker.DockerError(502, {"message": "Bad gateway"}),
    ]
    attempts: list[float] = []

    async def no_answer(docker):
        attempts.append(clock.now)
        raise problems[len(attempts) % len(problems)]

    trigger, log = _waiting(_clock_offset=no_answer)
    assert asyncio.run(trigger._wait(None)) == UNREACHABLE  # type: ignore[arg-type]
    assert clock.now - attempts[0] == pytest.approx(UNREACHABLE_SECONDS)  # gave up once the budget was spent
    assert sum(clock.slept) == pytest.approx(UNREACHABLE_SECONDS)
    assert 0.25 <= clock.slept[0] <= 0.5 and max(clock.slept) <= MAX_RETRY_SECONDS  # Backoff's delays
    assert max(clock.slept) > 2.0  # not the former formula (at most 2 s)
    assert len(log.warnings) == len(clock.slept) == len(attempts) - 1  # a warning per retry
    assert all(w.startswith("GPU wait on tcp://dood-proxy:2375: ") for w in log.warnings)
    assert all(" looking again in " in w for w in log.warnings)
    assert any("Connection refused" in w for w in log.warnings) and any("Cannot connect" in w for w in log.warnings)


def test_the_budget_starts_again_once_the_engine_has_answered(clock, monkeypatch):
    """An outage of 100 s, one look that answered, then an outage again: that one has its own 120 s."""
    monkeypatch.setattr(gpus_module, "served", lambda *args, **kwargs: None)  # not the task's turn
    answered: list[float] = []

    async def offset(docker):
        return 0.0

    @contextlib.asynccontextmanager
    async def events(docker):
        yield None

    async def look(docker):
        if clock.now >= 1100 and not answered:
            answered.append(clock.now)
            return [], []
        raise OSError(111, "Connection refused")

    async def keep_ticket(docker, queue, until):
        return 0.0

    async def stream_cut(stream, wakeup, until):
        raise aiohttp.ClientPayloadError("Response payload is not completed")

    trigger, log = _waiting(
        _clock_offset=offset, _events=events, _look=look, _keep_ticket=keep_ticket, _until_maybe_turn=stream_cut
    )
    assert asyncio.run(trigger._wait(None)) == UNREACHABLE  # type: ignore[arg-type]
    assert clock.now - answered[0] == pytest.approx(UNREACHABLE_SECONDS)
    assert any("Response payload is not completed" in w for w in log.warnings)


def test_an_engine_that_refuses_ends_the_wait_at_once(clock):
    async def refused(docker):
        raise aiodocker.DockerError(403, {"message": "dood-proxy: no"})

    trigger, log = _waiting(_clock_offset=refused)
    payload = asyncio.run(trigger._wait(None))  # type: ignore[arg-type]
    assert payload["status"] == "error" and payload["message"].startswith("Docker refused the GPU wait: ")
    assert clock.slept == [] and log.warnings == []
