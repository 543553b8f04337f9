"""dood.ui's endpoints with a fake engine and a fake auth manager: login required, DAG-level filtering,
attacker-controlled text escaped."""

from __future__ import annotations

import pytest
from airflow.api_fastapi.core_api.security import get_user
from fastapi.testclient import TestClient

from dood.ui import access, overview, routes
from dood.ui.app import create_app, external_views
from dood.ui.every_host import Engines
from dood.ui.reader import EngineReader

EVIL = "<script>window.pwned=1</script>"
EVIL_TASK = "<img src=x onerror=alert(1)>"


def _entry(cid: str, dag_id: str, state: str = "created") -> dict:
    labels = {"dood.managed": "true", "dood.dag_id": dag_id, "dood.run_id": "r1", "dood.task_id": EVIL_TASK}
    labels.update({"dood.map_index": "-1", "dood.try_number": "1"})
    return {
        "Id": cid * 64,
        "Names": [f"/{EVIL}"],
        "Image": EVIL,
        "State": state,
        "Status": "",
        "Created": 0,
        "Labels": labels,
    }


class FakeApi:
    def __init__(self, entries):
        self.entries = entries

    def containers(self, **kwargs):
        wanted = dict(f.split("=", 1) for f in (kwargs.get("filters") or {}).get("label", []))
        return [e for e in self.entries if all(e["Labels"].get(k) == v for k, v in wanted.items())]

    def inspect_container(self, cid):
        entry = next(e for e in self.entries if e["Id"] == cid)
        return {
            "Id": cid,
            "Name": "/" + EVIL,
            "Image": "sha256:x",
            "Config": {"Image": EVIL, "Labels": entry["Labels"], "Cmd": ["sh", "-c", EVIL]},
            "State": {"Status": "exited", "ExitCode": 3, "OOMKilled": True},
            "HostConfig": {},
            "Mounts": [{"Source": "/host/data", "Destination": "/data", "RW": False, "Type": "bind"}],
        }

    def logs(self, cid, **kwargs):
        return f"line one\n{EVIL}\n".encode()

    def info(self):
        return {"Name": "host", "ServerVersion": "20.10", "NCPU": 2, "MemTotal": 2**30}

    def inspect_image(self, ref):
        return {"Size": 1000}


class User:
    username = "outsider"


class AuthManager:
    def is_authorized_dag(self, *, method, user, access_entity=None, details=None):
        return "secret" not in details.id


@pytest.fixture
def client(monkeypatch):
    reader = EngineReader(FakeApi([_entry("a", "public", "exited"), _entry("b", "secret_dag")]))
    monkeypatch.setattr(routes, "engines", lambda: Engines({"": reader}))
    monkeypatch.setattr(access, "_auth_manager", lambda: AuthManager())
    monkeypatch.setattr(overview, "task_states", lambda keys: {})
    monkeypatch.setattr(routes, "attach_result", lambda view, may_read_xcom: None)
    app = create_app()
    app.dependency_overrides[get_user] = lambda: User()
    return TestClient(app)


def test_every_endpoint_needs_a_login():
    anonymous = TestClient(create_app())
    for path in (
        "/containers",
        "/api/containers",
        "/static/dood.css",
        "/dags/d/metrics",
        "/dags/d/runs/r/tasks/t/container",
    ):
        assert anonymous.get(path).status_code == 401, path


def test_the_list_shows_only_readable_dags_and_escapes(client):
    page = client.get("/containers")
    assert page.status_code == 200
    assert "public" in page.text and "secret_dag" not in page.text
    assert EVIL not in page.text and "&lt;script&gt;" in page.text
    listed = client.get("/api/containers").json()
    assert [c["dag_id"] for c in listed["containers"]] == ["public"]
    assert listed["containers"][0]["exit_code"] == 3 and listed["containers"][0]["oom_killed"] is True


def test_the_container_tab_checks_the_dag_and_escapes(client):
    assert client.get("/dags/secret_dag/runs/r1/tasks/x/container").status_code == 403
    page = client.get(f"/dags/public/runs/r1/tasks/{EVIL_TASK}/container?map_index=%7BMAP_INDEX%7D")
    assert page.status_code == 200
    assert "/host/data" in page.text and "line one" in page.text
    assert EVIL not in page.text and EVIL_TASK not in page.text


def test_static_files_are_an_allow_list(client):
    assert client.get("/static/dood.js").status_code == 200
    assert client.get("/static/..%2Fapp.py").status_code == 404


def test_the_views_airflow_shows():
    views = {v["destination"]: v for v in external_views()}
    assert set(views) == {"nav", "task_instance", "dag"}
    assert "{RUN_ID}" in views["task_instance"]["href"] and views["dag"]["name"] == "Model metrics"
