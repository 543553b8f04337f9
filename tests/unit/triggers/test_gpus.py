"""DoodGpuTrigger without an engine: it survives the trip through the triggerer's database, keeping the task's
place in the queue (its ticket) and its absolute deadline."""

from __future__ import annotations

import json
from importlib import import_module

import pytest

from dood.config.model import parse_config
from dood.triggers.gpus import CLASSPATH, DoodGpuTrigger


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
    assert kwargs["devices"] == ["0", "1"] and kwargs["docker_url"] == "tcp://dood-proxy:2375"
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
