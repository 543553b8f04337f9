"""dood.ui's endpoints with a fake engine and a fake auth manager: login required, DAG-level filtering,
attacker-controlled text escaped."""

from __future__ import annotations

import os

import pytest
from airflow.api_fastapi.core_api.security import get_user
from fastapi.testclient import TestClient

from dood.mounts.checkpoints import CheckpointKey, checkpoint_path
from dood.ui import access, detail, overview, routes
from dood.ui.app import create_app, external_views
from dood.ui.checkpoint import checkpoint_view
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
    monkeypatch.setattr(detail, "xcom_host_path", lambda task: None)
    monkeypatch.setattr(detail, "tracking_ui", lambda: (False, None))
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


# --- the checkpoint and the MLflow links (issues 23.1, 24) ---

RUN, PARENT = "a" * 32, "b" * 32


@pytest.fixture
def checkpointed(monkeypatch, tmp_path):
    """A container mounting a checkpoint (in tmp_path) that holds a hostile file name."""
    key = CheckpointKey(stack="dood", dag_id="public", task_id="train", run_id="r1")
    path = checkpoint_path(str(tmp_path / "dood-checkpoints"), key)
    os.makedirs(path)
    with open(os.path.join(path, EVIL_TASK), "wb") as out:
        out.write(b"x" * 2048)
    inspect = FakeApi.inspect_container

    def with_checkpoint(self, cid):
        found = inspect(self, cid)
        found["Mounts"].append({"Source": path, "Destination": "/dood/checkpoint", "RW": True, "Type": "bind"})
        return found

    monkeypatch.setattr(FakeApi, "inspect_container", with_checkpoint)
    monkeypatch.setattr(detail, "checkpoint_view", lambda host_path: checkpoint_view(host_path, []))  # no mount map
    return path


def test_the_container_tab_shows_the_checkpoint_path_and_what_it_holds(client, checkpointed):
    page = client.get(f"/dags/public/runs/r1/tasks/{EVIL_TASK}/container")
    assert page.status_code == 200
    assert checkpointed in page.text and "1 file(s), 2.0 KiB" in page.text
    assert 'id="checkpoint-modified"><time datetime="' in page.text and " UTC</time>" in page.text
    assert EVIL_TASK not in page.text and "&lt;img src=x onerror=alert(1)&gt;" in page.text  # the newest file


def test_once_the_container_is_gone_the_xcom_names_the_checkpoint(client, monkeypatch, tmp_path):
    gone = str(tmp_path / "dood-checkpoints" / "dood" / "public.x-h" / "run-r1-h-f1")
    monkeypatch.setattr(detail, "xcom_host_path", lambda task: gone)
    page = client.get("/dags/public/runs/r1/tasks/nothing-here/container")
    assert "No container of this task instance" in page.text
    assert gone in page.text and "not visible from the api-server" in page.text


def test_no_checkpoint_section_without_one(client):
    page = client.get(f"/dags/public/runs/r1/tasks/{EVIL_TASK}/container").text
    assert "/host/data" in page and 'id="checkpoint"' not in page


def test_the_container_tab_links_the_step_and_the_dag_run_to_mlflow(client, monkeypatch):
    from dood.ui.mlflow_links import MlflowRun

    monkeypatch.setattr(detail, "tracking_ui", lambda: (True, "http://127.0.0.1:5000"))
    monkeypatch.setattr(detail, "step_run", lambda task: MlflowRun("7", RUN, PARENT, EVIL))
    page = client.get("/dags/public/runs/r1/tasks/x/container").text
    link = page.split('id="mlflow-run"', 1)[1].split(">", 1)[0]
    assert link == f' target="_blank" rel="noopener noreferrer" href="http://127.0.0.1:5000/#/experiments/7/runs/{RUN}"'
    assert f'href="http://127.0.0.1:5000/#/experiments/7/runs/{PARENT}"' in page
    assert EVIL not in page and "&lt;script&gt;" in page  # the experiment's name, escaped


def test_tracked_without_ui_url_shows_the_ids_and_the_setting(client, monkeypatch):
    from dood.ui.mlflow_links import MlflowRun

    monkeypatch.setattr(detail, "tracking_ui", lambda: (True, None))
    monkeypatch.setattr(detail, "step_run", lambda task: MlflowRun("7", RUN, PARENT, "ml"))
    page = client.get("/dags/public/runs/r1/tasks/x/container").text
    assert RUN in page and PARENT in page and 'id="mlflow-run"' not in page
    assert "tracking.mlflow.ui_url" in page


def test_no_mlflow_section_without_tracking_nor_without_xcom_rights(client, monkeypatch):
    assert "MLflow" not in client.get("/dags/public/runs/r1/tasks/x/container").text
    monkeypatch.setattr(detail, "tracking_ui", lambda: (True, "http://127.0.0.1:5000"))
    monkeypatch.setattr(detail, "step_run", lambda task: None)
    assert "No MLflow run is recorded" in client.get("/dags/public/runs/r1/tasks/x/container").text
    monkeypatch.setattr(access, "may_read", lambda user, dag_id, entity: entity != "XCOM")
    called = []
    monkeypatch.setattr(detail, "step_run", lambda task: called.append(task))
    client.get("/dags/public/runs/r1/tasks/x/container")
    assert called == []


def test_the_metrics_tab_links_each_dag_run_to_its_parent_run(client, monkeypatch):
    from datetime import datetime, timezone

    from dood.ui.metrics import QualityGate, RunMetrics
    from dood.ui.mlflow_links import MlflowRun

    when = datetime(2026, 1, 1, tzinfo=timezone.utc)
    runs = [
        RunMetrics("r1", "manual", when, when, "success", {"accuracy": 0.9}),
        RunMetrics("r2", "manual", when, when, "success", {"accuracy": 0.8}),
    ]
    monkeypatch.setattr(routes, "quality_gate", lambda dag_id: QualityGate("accuracy", 0.85))
    monkeypatch.setattr(routes, "run_metrics", lambda dag_id: runs)
    monkeypatch.setattr(routes, "tracking_ui", lambda: (True, "http://127.0.0.1:5000"))
    monkeypatch.setattr(routes, "parent_runs", lambda dag_id: {"r1": MlflowRun("7", RUN, PARENT)})
    page = client.get("/dags/public/metrics").text
    assert "<th>MLflow</th>" in page
    assert page.count('class="mlflow-parent"') == 1
    assert f'href="http://127.0.0.1:5000/#/experiments/7/runs/{PARENT}">parent run</a>' in page
    monkeypatch.setattr(routes, "tracking_ui", lambda: (False, None))
    assert "MLflow" not in client.get("/dags/public/metrics").text
