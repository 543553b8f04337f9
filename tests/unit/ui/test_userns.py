"""The DooD page says, per Docker host, whether its engine remaps user namespaces (dood.engine.security)."""

from __future__ import annotations

from airflow.api_fastapi.core_api.security import get_user
from fastapi.testclient import TestClient

from dood.ui import access, overview, routes
from dood.ui.app import create_app
from dood.ui.every_host import Engines
from dood.ui.reader import EngineReader
from tests.unit.ui.test_routes import AuthManager, FakeApi, User, _entry


class Remapped(FakeApi):
    def info(self):
        return super().info() | {
            "Name": "gpu-box",
            "SecurityOptions": ["name=seccomp,profile=default", "name=userns"],
            "DockerRootDir": "/var/lib/docker/100000.100000",
        }


def _page(monkeypatch, engines: Engines) -> str:
    monkeypatch.setattr(routes, "engines", lambda: engines)
    monkeypatch.setattr(access, "_auth_manager", lambda: AuthManager())
    monkeypatch.setattr(overview, "task_states", lambda keys: {})
    app = create_app()
    app.dependency_overrides[get_user] = lambda: User()
    return TestClient(app).get("/containers").text


def test_each_host_says_whether_container_uids_are_host_uids(monkeypatch):
    main = EngineReader(FakeApi([_entry("a", "public", "exited")]))
    remapped = EngineReader(Remapped([]))
    page = _page(monkeypatch, Engines({"": main, "host-b": remapped}))
    assert "user namespaces: not remapped (container uids are host uids; see docs/security.md)" in page
    assert "host-b: gpu-box · Docker 20.10" in page
    assert "user namespaces: remapped (container uid 0 = host uid 100000, gid 0 = host gid 100000)" in page


def test_one_remapped_host_on_the_summary_line(monkeypatch):
    page = _page(monkeypatch, Engines({"": EngineReader(Remapped([]))}))
    assert "gpu-box · Docker 20.10 · 2 CPUs · " in page
    assert " · user namespaces: remapped (container uid 0 = host uid 100000" in page
    assert "host-b" not in page
