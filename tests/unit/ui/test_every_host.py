"""dood.ui.every_host: the UI reads every Docker host as one (the main engine and each host's read-only proxy);
rows say their host, calls about a container go to the engine that listed it, a host down leaves the others."""

from __future__ import annotations

import pytest
from airflow.api_fastapi.core_api.security import get_user
from fastapi.testclient import TestClient

from dood.config.model import parse_config
from dood.ui import access, overview, routes
from dood.ui.app import create_app
from dood.ui.every_host import Engines
from dood.ui.reader import EngineReader
from tests.unit.ui.test_routes import AuthManager, FakeApi, User, _entry


class Down(FakeApi):
    def containers(self, **kwargs):
        raise ConnectionError("no route to host")


def _engines(b_api=None) -> Engines:
    main = EngineReader(FakeApi([_entry("a", "public", "exited")]))
    b = EngineReader(b_api or FakeApi([_entry("b", "public", "exited") | {"Labels": _labels_on("host-b")}]))
    return Engines({"": main, "host-b": b}, unreadable=["host-c"])


def _labels_on(host: str) -> dict:
    return _entry("b", "public")["Labels"] | {"dood.host": host}


def test_rows_of_every_host_each_with_its_host_and_its_engine():
    engines = _engines()
    entries = engines.containers()
    assert {e["Id"][0]: e["DoodHost"] for e in entries} == {"a": "", "b": "host-b"}
    assert engines._reader_of("b" * 64) is engines.readers["host-b"]  # inspect and logs go there
    assert engines.inspect("b" * 64, "exited")["State"]["ExitCode"] == 3
    assert engines.errors == ["host host-c: not readable from the UI (give hosts.host-c.ui_docker, its read-only "
                              "dood-proxy)"]  # fmt: skip


def test_a_host_down_leaves_the_others_and_says_which():
    engines = _engines(Down([]))
    assert [e["Id"][0] for e in engines.containers()] == ["a"]
    assert (
        engines.errors[0]
        == "host host-b: the Docker engine did not answer (no network route to it): its containers are not counted"
    )
    with pytest.raises(RuntimeError, match="host main: no network route to it; host host-b: no network route"):
        Engines({"": EngineReader(Down([])), "host-b": EngineReader(Down([]))}).containers()


def test_the_page_has_a_host_column_with_several_hosts(monkeypatch):
    monkeypatch.setattr(routes, "engines", lambda: _engines())
    monkeypatch.setattr(access, "_auth_manager", lambda: AuthManager())
    monkeypatch.setattr(overview, "task_states", lambda keys: {})
    app = create_app()
    app.dependency_overrides[get_user] = lambda: User()
    page = TestClient(app).get("/containers").text
    assert "<th>Host</th>" in page and '<td class="host">host-b</td>' in page and '<td class="host">main</td>' in page
    assert "not readable from the UI (give hosts.host-c.ui_docker" in page
    summary = TestClient(app).get("/api/containers").json()["summary"]
    assert summary["hosts"] == ["", "host-b", "host-c"]


def test_one_host_has_no_host_column(monkeypatch):
    one = Engines({"": EngineReader(FakeApi([_entry("a", "public", "exited")]))})
    monkeypatch.setattr(routes, "engines", lambda: one)
    monkeypatch.setattr(access, "_auth_manager", lambda: AuthManager())
    monkeypatch.setattr(overview, "task_states", lambda keys: {})
    app = create_app()
    app.dependency_overrides[get_user] = lambda: User()
    assert "<th>Host</th>" not in TestClient(app).get("/containers").text


def test_readers_come_from_the_config_and_never_a_creating_proxy(monkeypatch, tmp_path):
    config = tmp_path / "dood.yaml"
    config.write_text(
        "docker: {url: 'unix:///run/main.sock', api_version: '1.41'}\n"
        "hosts:\n"
        "  host-b:\n    docker: {url: 'tcp://b:2376'}\n    ui_docker: {url: 'tcp://b:2377', api_version: '1.41'}\n"
        "  host-c:\n    docker: {url: 'tcp://c:2376'}\n"
    )
    monkeypatch.setenv("DOOD_CONFIG", str(config))
    monkeypatch.delenv("DOOD_HOST", raising=False)
    monkeypatch.setenv("DOOD_UI_DOCKER_URL", "tcp://127.0.0.1:2379")
    engines = Engines.from_config()
    assert set(engines.readers) == {"", "host-b"} and engines.unreadable == ("host-c",)
    assert engines.readers["host-b"].api.base_url == "http://b:2377"
    assert engines.readers[""].api.base_url == "http://127.0.0.1:2379"
    assert parse_config({"hosts": {"x": {"docker": {"url": "tcp://x:1"}}}}).hosts["x"].ui_docker is None


def test_a_host_whose_client_cannot_be_made_is_named_and_the_rest_is_read(monkeypatch, tmp_path):
    config = tmp_path / "dood.yaml"
    config.write_text(
        "docker: {url: 'unix:///run/main.sock', api_version: '1.41'}\n"
        "hosts:\n  host-b:\n    docker: {url: 'tcp://b:2376'}\n    ui_docker: {url: 'tcp://127.0.0.1:9'}\n"
    )
    monkeypatch.setenv("DOOD_CONFIG", str(config))
    monkeypatch.delenv("DOOD_HOST", raising=False)
    monkeypatch.delenv("DOOD_UI_DOCKER_URL", raising=False)
    engines = Engines.from_config()  # host-b's API version is asked of it: nothing listens there
    assert set(engines.readers) == {""} and "host-b" in engines.down and engines.several
    engines.readers[""] = EngineReader(FakeApi([_entry("a", "public", "exited")]))
    assert [e["Id"][0] for e in engines.containers()] == ["a"]
    assert any(error.startswith("host host-b: ") for error in engines.errors)
