"""DoodContainerTrigger without an engine: it survives the trip through the triggerer's database."""

from __future__ import annotations

import json
import time

import pytest

from dood.config.model import parse_config
from dood.engine.target import FLAT_KWARGS, DockerTarget
from dood.triggers.container import CLASSPATH, DoodContainerTrigger


def test_serialize_round_trips_through_json():
    trigger = DoodContainerTrigger(
        container_id="abc123",
        target=DockerTarget("tcp://dood-proxy:2375", "1.41"),
        deadline=1_900_000_000.5,
        retry_budget_seconds=30,
        stop_grace_seconds=5,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == CLASSPATH == "dood.triggers.container.DoodContainerTrigger"
    restored_kwargs = json.loads(json.dumps(kwargs))  # plain JSON types only
    assert restored_kwargs == kwargs
    again = DoodContainerTrigger(**restored_kwargs)
    assert again.serialize() == (classpath, kwargs)
    assert kwargs["deadline"] == 1_900_000_000.5
    assert kwargs["target"] == {  # one value, a plain dict
        "url": "tcp://dood-proxy:2375",
        "api_version": "1.41",
        "tls_ca_cert": None,
        "tls_client_cert": None,
        "tls_client_key": None,
    }
    assert again.target == DockerTarget("tcp://dood-proxy:2375", "1.41")


#: What the previous release's serialize() returned (the endpoint as five flat kwargs), as its trigger rows hold it.
PREVIOUS_RELEASE_ROW = {
    "container_id": "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc",
    "docker_url": "tcp://gpu-b.example.com:2376",
    "api_version": "1.41",
    "deadline": 1900000000.5,
    "retry_budget_seconds": 45.0,
    "stop_grace_seconds": 10,
    "tls_ca_cert": "/certs/ca.pem",
    "tls_client_cert": "/certs/cert.pem",
    "tls_client_key": "/certs/key.pem",
    "host": "b",
    "resume": {
        "handle": {
            "container_id": "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc",
            "run_dir": "/runs/dood/r1",
        }
    },
    "resume_not_before": 1800000000.25,
}


def test_a_trigger_row_of_the_previous_release_constructs_and_serializes_the_new_way():
    """An upgrade with tasks deferred: the triggerer builds their triggers from the rows the old release wrote."""
    trigger = DoodContainerTrigger(**json.loads(json.dumps(PREVIOUS_RELEASE_ROW)))
    assert trigger.target == DockerTarget(
        "tcp://gpu-b.example.com:2376", "1.41", "/certs/ca.pem", "/certs/cert.pem", "/certs/key.pem"
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == CLASSPATH
    assert not set(kwargs) & set(FLAT_KWARGS)
    assert kwargs["target"] == trigger.target.as_dict()
    others = {k: v for k, v in PREVIOUS_RELEASE_ROW.items() if k not in kwargs and k != "container_id"}
    assert set(others) == {"docker_url", "api_version", "tls_ca_cert", "tls_client_cert", "tls_client_key"}
    assert {k: v for k, v in kwargs.items() if k != "target"} == {
        k: v for k, v in PREVIOUS_RELEASE_ROW.items() if k not in others
    }
    again = DoodContainerTrigger(**json.loads(json.dumps(kwargs)))
    assert again.serialize() == (classpath, kwargs) and again.target == trigger.target
    docker = trigger._for_resume({"status": "success"})["resume"]["docker"]  # the endpoint the resume is handed
    assert docker == {
        "url": "tcp://gpu-b.example.com:2376",
        "api_version": "1.41",
        "tls_ca_cert": "/certs/ca.pem",
        "tls_client_cert": "/certs/cert.pem",
        "tls_client_key": "/certs/key.pem",
        "unreachable_timeout_seconds": 45.0,
    }


def test_a_previous_release_row_without_tls_or_api_version_takes_the_defaults():
    trigger = DoodContainerTrigger(container_id="abc", docker_url="unix:///run/dood/proxy.sock")
    assert trigger.target == DockerTarget("unix:///run/dood/proxy.sock", "auto")
    assert DoodContainerTrigger(container_id="abc").target == DockerTarget("unix:///var/run/docker.sock")


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"target": DockerTarget("tcp://a:2375"), "docker_url": "tcp://b:2375"}, ValueError, "not both"),
        ({"dockr_url": "tcp://b:2375"}, TypeError, "unexpected keyword argument.*dockr_url"),
        ({"target": {"url": "tcp://a:2375", "tls_ca": "/ca.pem"}}, ValueError, "target: unknown key.*'tls_ca'"),
        ({"target": {"api_version": "1.41"}}, ValueError, "target.url"),
        ({"target": {"url": "tcp://a:2375", "tls_ca_cert": 3}}, ValueError, "target.tls_ca_cert"),
        ({"target": {"url": "tcp://a:2375", "api_version": "latest"}}, ValueError, "api_version"),
        ({"target": "tcp://a:2375"}, ValueError, "target: a mapping"),
    ],
)
def test_a_bad_endpoint_says_which_field_and_how(kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        DoodContainerTrigger(container_id="abc", **kwargs)


def test_classpath_imports_the_class():
    from importlib import import_module

    module, _, name = CLASSPATH.rpartition(".")
    assert getattr(import_module(module), name) is DoodContainerTrigger


def test_timeout_seconds_becomes_an_absolute_deadline_that_survives_a_restart():
    before = time.time()
    _, kwargs = DoodContainerTrigger(container_id="abc", timeout_seconds=60).serialize()
    assert "timeout_seconds" not in kwargs
    assert before + 60 <= kwargs["deadline"] <= time.time() + 60
    time.sleep(0.01)
    assert DoodContainerTrigger(**kwargs).deadline == kwargs["deadline"]  # the clock does not restart


def test_no_client_is_held_before_run():
    trigger = DoodContainerTrigger(container_id="abc")
    assert not any("docker" in type(value).__module__ for value in vars(trigger).values())


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"container_id": ""}, "container_id"),
        ({"container_id": "a", "deadline": 1.0, "timeout_seconds": 5}, "not both"),
        ({"container_id": "a", "timeout_seconds": 0}, "timeout_seconds"),
        ({"container_id": "a", "api_version": "latest"}, "api_version"),
        ({"container_id": "a", "retry_budget_seconds": 0}, "retry_budget_seconds"),
        ({"container_id": "a", "stop_grace_seconds": -1}, "stop_grace_seconds"),
    ],
)
def test_invalid_arguments_say_which_and_how(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        DoodContainerTrigger(**kwargs)


def test_from_config_uses_the_shared_docker_endpoint():
    config = parse_config(
        {
            "docker": {"url": "unix:///run/other.sock", "api_version": "1.41"},
            "defaults": {"stop_grace_period_seconds": 7},
        }
    )
    _, kwargs = DoodContainerTrigger.from_config(config, "abc", timeout_seconds=10).serialize()
    assert kwargs["target"]["url"] == "unix:///run/other.sock"
    assert kwargs["target"]["api_version"] == "1.41"
    assert kwargs["stop_grace_seconds"] == 7
    assert kwargs["deadline"] > time.time()


# -- the triggerer reaches the container's host by its own config ------------------------------------

HOSTS_CONFIG = """
hosts:
  a: {docker: {url: "unix:///var/run/dood-a.sock"}}
  b:
    docker: {url: "tcp://gpu-b.example.com:2376", tls_ca_cert: /certs/ca.pem, tls_client_cert: /certs/cert.pem,
             tls_client_key: /certs/key.pem}
    local_docker: {url: "unix:///run/dood/proxy.sock"}
"""


def handed_over(host):
    """A trigger as the task serialized it: the endpoint and certificate paths its worker saw."""
    return DoodContainerTrigger(
        container_id="abc",
        target=DockerTarget(
            "tcp://10.0.0.9:2376",
            tls_ca_cert="/old/ca.pem",
            tls_client_cert="/old/cert.pem",
            tls_client_key="/old/key.pem",
        ),
        host=host,
    )


def reached(trigger):
    import asyncio

    asyncio.run(trigger._reach_host())
    return trigger.target.url, trigger.target.tls_client_cert


@pytest.fixture
def triggerer_config(tmp_path, monkeypatch):
    path = tmp_path / "dood.yaml"
    path.write_text(HOSTS_CONFIG)
    monkeypatch.setenv("DOOD_CONFIG", str(path))
    monkeypatch.delenv("DOOD_HOST", raising=False)
    return monkeypatch


def test_the_host_survives_serialization_and_from_config_names_it():
    view = parse_config({"hosts": {"b": {"docker": {"url": "tcp://gpu-b:2376"}}}}).on_host("b")
    trigger = DoodContainerTrigger.from_config(view, "abc")
    _, kwargs = trigger.serialize()
    assert kwargs["host"] == "b"
    assert DoodContainerTrigger(**json.loads(json.dumps(kwargs))).host == "b"


def test_a_triggerer_elsewhere_reaches_the_host_by_its_network_endpoint_from_its_own_config(triggerer_config):
    assert reached(handed_over("b")) == ("tcp://gpu-b.example.com:2376", "/certs/cert.pem")


def test_a_triggerer_on_the_host_itself_takes_its_local_proxy(triggerer_config):
    triggerer_config.setenv("DOOD_HOST", "b")
    assert reached(handed_over("b")) == ("unix:///run/dood/proxy.sock", None)


def test_a_host_this_config_does_not_know_or_no_host_keeps_the_handed_over_endpoint(triggerer_config):
    assert reached(handed_over("z")) == ("tcp://10.0.0.9:2376", "/old/cert.pem")
    assert reached(handed_over(None)) == ("tcp://10.0.0.9:2376", "/old/cert.pem")


def test_an_unreadable_config_keeps_the_handed_over_endpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("DOOD_CONFIG", str(tmp_path / "missing.yaml"))
    assert reached(handed_over("b")) == ("tcp://10.0.0.9:2376", "/old/cert.pem")


def test_an_endpoint_with_a_variable_this_environment_lacks_keeps_the_handed_over_one(tmp_path, monkeypatch):
    path = tmp_path / "dood.yaml"
    path.write_text('hosts:\n  b: {docker: {url: "tcp://${DOOD_TEST_UNSET_ADDRESS}"}}\n')
    monkeypatch.setenv("DOOD_CONFIG", str(path))
    monkeypatch.delenv("DOOD_TEST_UNSET_ADDRESS", raising=False)
    monkeypatch.delenv("DOOD_HOST", raising=False)
    assert reached(handed_over("b")) == ("tcp://10.0.0.9:2376", "/old/cert.pem")
