"""What a process keeps between task launches (issue 12) never changes what a launch sees.

The config's YAML is parsed once per text; the API version `auto` negotiates is asked once per endpoint.
"""

from __future__ import annotations

import pytest

import dood.hooks.dood as hook_module
from dood.config.file import read_config_file
from dood.config.model import load_config, parse_config
from dood.hooks.dood import DoodHook


def test_an_edited_config_file_is_read_anew(tmp_path):
    path = tmp_path / "dood.yaml"
    path.write_text("stack: one\n")
    assert load_config(path).stack == "one"
    path.write_text("stack: two\n")
    assert load_config(path).stack == "two"


def test_a_changed_variable_in_the_config_is_expanded_anew(tmp_path, monkeypatch):
    path = tmp_path / "dood.yaml"
    path.write_text("stack: ${DOOD_TEST_CACHE_STACK}\n")
    monkeypatch.setenv("DOOD_TEST_CACHE_STACK", "blue")
    assert load_config(path).stack == "blue"
    monkeypatch.setenv("DOOD_TEST_CACHE_STACK", "green")
    assert load_config(path).stack == "green"


def test_a_caller_changing_what_it_read_does_not_change_the_next_read(tmp_path):
    path = tmp_path / "dood.yaml"
    path.write_text("defaults:\n  labels: {team: ml}\n")
    data, _ = read_config_file(path)
    data["defaults"]["labels"]["team"] = "changed"
    assert read_config_file(path)[0] == {"defaults": {"labels": {"team": "ml"}}}


class _FakeClient:
    """docker.APIClient as DockerHook makes it: records the version asked; `auto` becomes the daemon's."""

    made: list[str | None] = []

    def __init__(self, *, base_url, version, tls, timeout):
        self.made.append(version)
        self.api_version = "1.41" if version in (None, "auto") else version
        self.trust_env = True

    def ping(self):
        return True


@pytest.fixture
def fake_client(monkeypatch):
    import airflow.providers.docker.hooks.docker as provider_hook

    monkeypatch.setattr(provider_hook, "APIClient", _FakeClient)
    monkeypatch.setattr(hook_module, "_API_VERSION", {})
    _FakeClient.made = []
    return _FakeClient


def test_auto_api_version_is_negotiated_once_per_endpoint(fake_client):
    unix = parse_config({"docker": {"url": "unix:///var/run/docker.sock"}})
    tcp = parse_config({"docker": {"url": "tcp://proxy:2375"}})
    for config in (unix, unix, tcp, unix, tcp):
        assert DoodHook(config).api.api_version == "1.41"
    assert fake_client.made == ["auto", "1.41", "auto", "1.41", "1.41"]


def test_a_configured_api_version_is_used_as_is(fake_client):
    config = parse_config({"docker": {"url": "unix:///var/run/docker.sock", "api_version": "1.40"}})
    for _ in range(2):
        assert DoodHook(config).api.api_version == "1.40"
    assert fake_client.made == ["1.40", "1.40"]
    assert hook_module._API_VERSION == {}


def test_environment_proxies_are_not_read_for_a_unix_socket_only(fake_client):
    assert DoodHook(parse_config({"docker": {"url": "unix:///var/run/docker.sock"}})).api.trust_env is False
    assert DoodHook(parse_config({"docker": {"url": "tcp://proxy:2375"}})).api.trust_env is True
