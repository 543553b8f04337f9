"""The DooD page names a host whose steps wait for a Celery worker that is not there (issue 25.3): the rule
(`dood.ui.workers`), the background refresh that keeps Celery's slow answer off the page, and the page."""

from __future__ import annotations

import threading
import time

import pytest
from airflow.api_fastapi.core_api.security import get_user
from fastapi.testclient import TestClient

from dood.config.model import parse_config
from dood.config.placement import queues_without_worker
from dood.ui import access, overview, routes, workers
from dood.ui.app import create_app
from dood.ui.every_host import Engines
from dood.ui.reader import EngineReader
from dood.ui.workers import Stranded, Workers, notices, stranded

SHARED = [{"airflow_path": "/opt/dood", "host_path": "/srv/dood"}]
STEP = {"image": "img", "command": ["run"]}


def two_hosts():
    """Host main (queue dood-main) and gpu-b (queue dood-gpu-b); train may run on gpu-b only."""
    steps = {"prepare": dict(STEP), "train": {**STEP, "host": "gpu-b"}, "evaluate": dict(STEP)}
    pipeline = {"data_root": "/opt/dood/d", "model_root": "/opt/dood/m", "artifact_root": "/opt/dood/a", "steps": steps}
    hosts = {
        "main": {"docker": {"url": "tcp://dood-proxy:2375"}, "mount_map": SHARED},
        "gpu-b": {"docker": {"url": "tcp://gpu-b.example.com:2375"}, "mount_map": SHARED},
    }
    return parse_config({"hosts": hosts, "mount_map": SHARED, "pipelines": {"p": pipeline}})


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.01)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what}")


# --- the rule ---


def test_a_host_without_a_live_worker_is_named_with_its_queued_tasks():
    config = two_hosts()
    missing = queues_without_worker(config.hosts, config.pipelines, {"celery@main": ["dood-main"]})
    assert missing == {"dood-gpu-b": ["gpu-b"]}  # what `python -m dood.hosts workers` prints
    found = stranded(missing, {"dood-gpu-b": 3, "dood-main": 7})
    assert found == [Stranded("gpu-b", ("dood-gpu-b",), 3)]
    assert found[0].said() == "host gpu-b: no live worker: 3 tasks queued for it (queue dood-gpu-b)"
    assert stranded(missing, {})[0].said().startswith("host gpu-b: no live worker: 0 tasks queued for it")
    assert stranded(missing, {"dood-gpu-b": 1})[0].said().startswith("host gpu-b: no live worker: 1 task queued")


def test_every_host_is_fine_when_each_queue_has_a_worker():
    config = two_hosts()
    active = {"celery@main": ["dood-main"], "celery@b": ["dood-gpu-b"]}
    assert stranded(queues_without_worker(config.hosts, config.pipelines, active), {"dood-main": 4}) == []


def test_a_shared_queue_counts_for_each_host_it_may_run_on():
    found = stranded({"dood-b+c": ["b", "c"], "box-c": ["c"]}, {"dood-b+c": 2, "box-c": 1})
    assert found == [Stranded("b", ("dood-b+c",), 2), Stranded("c", ("box-c", "dood-b+c"), 3)]


# --- the background refresh ---


def test_a_page_never_waits_for_celery_and_shows_the_latest_answer():
    asked = threading.Event()
    release = threading.Event()

    def slow_celery():
        asked.set()
        release.wait(10)
        return {"dood-gpu-b": ("gpu-b",)}

    watched = Workers(slow_celery, refresh=0.0)
    started = time.monotonic()
    assert watched.latest() is None  # no answer yet: the page shows nothing rather than wait
    assert time.monotonic() - started < 0.5
    wait_for(asked.is_set, 5, "the background ask of Celery to start")
    assert watched.latest() is None  # one ask at a time
    release.set()
    found = wait_for(watched.latest, 5, "Celery's answer to be kept")
    assert found == ({"dood-gpu-b": ["gpu-b"]}, None)


def test_celery_not_answering_is_said_not_hidden():
    def down():
        raise ConnectionRefusedError(111, "Connection refused")

    watched = Workers(down, refresh=60)
    watched.latest()
    missing, error = wait_for(watched.latest, 5, "the failed ask to be recorded")
    assert missing == {}
    assert error == "which hosts have a live worker is unknown: Celery did not answer (refused the connection)"
    assert notices(watched, lambda dag_ids: set(dag_ids)) == ([], error)


def test_queued_counts_are_only_of_dags_the_user_may_read(monkeypatch):
    watched = Workers(lambda: {"dood-gpu-b": ["gpu-b"]}, refresh=60)
    watched.latest()
    wait_for(watched.latest, 5, "Celery's answer")
    monkeypatch.setattr(workers, "queued_counts", lambda queues: {"dood-gpu-b": {"dood_ml": 2, "secret_dag": 5}})
    found, error = notices(watched, lambda dag_ids: {d for d in dag_ids if "secret" not in d})
    assert error is None and found == [Stranded("gpu-b", ("dood-gpu-b",), 2)]


def test_nothing_is_watched_without_hosts_or_celery(monkeypatch):
    monkeypatch.setattr(workers, "_workers", None)
    monkeypatch.setattr(workers, "_decided", False)
    assert workers.celery_workers() is None  # the unit tests' config has no `hosts:`
    assert notices(None, lambda dag_ids: set(dag_ids)) == ([], None)


# --- the page ---


class Api:
    def containers(self, **kwargs):
        return []

    def info(self):
        return {"Name": "host", "ServerVersion": "20.10", "NCPU": 2, "MemTotal": 2**30}


class Everyone:
    def is_authorized_dag(self, **kwargs):
        return True


@pytest.fixture
def page(monkeypatch):
    watched = Workers(lambda: {"dood-gpu-b": ["gpu-b"]}, refresh=60)
    watched.latest()
    wait_for(watched.latest, 5, "Celery's answer")
    monkeypatch.setattr(routes, "engines", lambda: Engines({"": EngineReader(Api())}))
    monkeypatch.setattr(routes, "celery_workers", lambda: watched)
    monkeypatch.setattr(access, "_auth_manager", lambda: Everyone())
    monkeypatch.setattr(overview, "task_states", lambda keys: {})
    monkeypatch.setattr(workers, "queued_counts", lambda queues: {"dood-gpu-b": {"dood_ml": 3}})
    app = create_app()
    app.dependency_overrides[get_user] = lambda: object()
    return TestClient(app)


def test_the_dood_page_says_which_host_has_no_live_worker(page):
    shown = page.get("/containers")
    assert shown.status_code == 200
    assert 'data-host="gpu-b"' in shown.text
    assert "host gpu-b: no live worker: 3 tasks queued for it (queue dood-gpu-b)" in shown.text
    assert "No dood containers" in shown.text  # the list alone would show nothing
    again = page.get("/containers?fragment=1")  # the page's own refresh
    assert "host gpu-b: no live worker: 3 tasks queued for it" in again.text
    listed = page.get("/api/containers").json()["summary"]["stranded"]
    assert listed == [
        {
            "host": "gpu-b",
            "queues": ["dood-gpu-b"],
            "queued": 3,
            "said": "host gpu-b: no live worker: 3 tasks queued for it (queue dood-gpu-b)",
        }
    ]
