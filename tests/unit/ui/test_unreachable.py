"""The DooD page when the Docker engine does not answer: the counts say "unknown" and why in plain words, not
"0 running / No dood containers"; the page never shows the raw urllib3 error naming internal hosts (that
goes to the api-server's log). Real Docker clients against real sockets: one nobody listens on (refused),
one that accepts and never answers (timed out)."""

from __future__ import annotations

import logging
import socket

import docker
import pytest
from airflow.api_fastapi.core_api.security import get_user
from fastapi.testclient import TestClient

from dood.ui import access, overview, routes
from dood.ui.app import create_app
from dood.ui.every_host import Engines
from dood.ui.reader import EngineReader
from tests.ports import free_port
from tests.unit.ui.test_routes import AuthManager, FakeApi, User, _entry

RAW = ("HTTPConnectionPool", "urllib3", "127.0.0.1", "Errno", "NewConnectionError", "Max retries")


@pytest.fixture
def silent_port():
    """A port that accepts connections and never answers (an engine hung, or a proxy stuck before it)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def _reader(port: int) -> EngineReader:
    return EngineReader(docker.APIClient(base_url=f"tcp://127.0.0.1:{port}", version="1.41", timeout=0.5))


def _client(monkeypatch, engines: Engines) -> TestClient:
    monkeypatch.setattr(routes, "engines", lambda: engines)
    monkeypatch.setattr(access, "_auth_manager", lambda: AuthManager())
    monkeypatch.setattr(overview, "task_states", lambda keys: {})
    app = create_app()
    app.dependency_overrides[get_user] = lambda: User()
    return TestClient(app)


@pytest.mark.parametrize("kind", ["refused", "timed out"])
def test_an_unreachable_engine_makes_the_counts_unknown_in_words(monkeypatch, silent_port, caplog, kind):
    port = free_port() if kind == "refused" else silent_port
    client = _client(monkeypatch, Engines({"": _reader(port)}))
    with caplog.at_level(logging.WARNING, logger="dood.ui"):
        page = client.get("/containers").text
    said = "refused the connection" if kind == "refused" else "timed out"
    assert f"The Docker engine did not answer ({said}): the counts are unknown." in page, page
    assert "<b>unknown</b> running" in page and "<b>unknown</b> dood containers" in page
    assert "<b>0</b>" not in page and "No dood containers" not in page
    assert "Unknown: the Docker engine did not answer" in page  # the table's row, not "No dood containers"
    for raw in RAW:
        assert raw not in page, raw
    assert "127.0.0.1" in caplog.text  # the details are in the api-server's log
    summary = client.get("/api/containers").json()["summary"]
    assert summary["unknown"] is True and summary["running"] is None and summary["total"] is None
    assert not any(raw in summary["error"] for raw in RAW), summary["error"]


def test_one_host_down_of_two_is_named_in_words_and_the_other_counted(monkeypatch):
    main = EngineReader(FakeApi([_entry("a", "public", "exited")]))
    engines = Engines({"": main, "gpu-box": _reader(free_port())})
    page = _client(monkeypatch, engines).get("/containers").text
    assert "host gpu-box: the Docker engine did not answer (refused the connection): its containers are not " in page
    assert "<b>1</b> dood containers" in page
    for raw in RAW:
        assert raw not in page, raw


def test_why_in_words():
    from dood.ui import problems

    assert problems.why(TimeoutError("x")) == "timed out"
    assert problems.why(ConnectionRefusedError(111, "Connection refused")) == "refused the connection"
    assert problems.why(FileNotFoundError(2, "No such file or directory")) == "its socket is not there"
    assert problems.why(PermissionError(13, "Permission denied")) == "permission denied on its socket"
    assert problems.why(socket.gaierror(-2, "Name or service not known")) == "its host name is not known"
    assert problems.why(ConnectionError("no route to host")) == "no network route to it"
    assert problems.why(RuntimeError("something else")) == ""
    wrapped = RuntimeError("outer")
    wrapped.__cause__ = ConnectionRefusedError(111, "refused")
    assert problems.why(wrapped) == "refused the connection"
    assert problems.counts_unknown(RuntimeError("?")) == (
        "The Docker engine did not answer: the counts are unknown. The api-server's log has the details."
    )
    both = problems.NoEngineAnswered({"": "timed out", "b": "refused the connection"})
    assert problems.counts_unknown(both).startswith(
        "The Docker engines did not answer (main: timed out; b: refused the connection): the counts are unknown."
    )
