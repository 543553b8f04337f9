"""How the pages show times, image references and wide tables: `YYYY-MM-DD HH:MM:SS UTC` as Airflow does
(Docker's nanoseconds kept in a title), images wrapping at `/` `:` `@` only, the metrics table in a box that
scrolls, and a short note on the Model metrics tab of a DAG that is not a pipeline (Airflow shows the tab on
every DAG)."""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.api_fastapi.core_api.security import get_user
from fastapi.testclient import TestClient

from dood.ui import access, render, routes
from dood.ui.app import create_app
from dood.ui.metrics import QualityGate, RunMetrics
from tests.unit.ui.test_routes import AuthManager, User


def test_docker_times_are_shown_as_airflow_shows_times_with_the_full_value_in_a_title():
    raw = "2026-12-06T21:03:00.123456789Z"
    assert render.when(raw) == "2026-12-06 21:03:00 UTC"
    assert render.when("2026-12-06T22:03:00.5+01:00") == "2026-12-06 21:03:00 UTC"
    assert render.when("0001-01-01T00:00:00Z") == "—" and render.when(None) == "—"
    assert render.when("not a time") == "not a time"
    assert str(render.timestamp(raw)) == f'<time datetime="{raw}" title="{raw}">2026-12-06 21:03:00 UTC</time>'
    aware = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert 'title="2026-01-02T03:04:05+00:00">2026-01-02 03:04:05 UTC<' in render.timestamp(aware)
    assert str(render.timestamp("<b>")) == "&lt;b&gt;"


def test_an_image_wraps_after_its_separators_only_and_stays_escaped():
    shown = str(render.breakable("registry.example.com:5000/team/trainer-<x>:2026.12"))
    assert shown == "registry.example.com:<wbr>5000/<wbr>team/<wbr>trainer-&lt;x&gt;:<wbr>2026.12"


def _client(monkeypatch, gate, runs=()) -> TestClient:
    monkeypatch.setattr(access, "_auth_manager", lambda: AuthManager())
    monkeypatch.setattr(routes, "quality_gate", lambda dag_id: gate)
    monkeypatch.setattr(routes, "run_metrics", lambda dag_id: list(runs))
    app = create_app()
    app.dependency_overrides[get_user] = lambda: User()
    return TestClient(app)


def test_the_metrics_tab_of_a_dag_that_is_not_a_pipeline_is_a_short_note(monkeypatch):
    page = _client(monkeypatch, None).get("/dags/public_etl/metrics").text
    assert "No model metrics for this DAG" in page and "is not a dood pipeline DAG" not in page
    assert 'id="runs"' not in page and "<svg" not in page


def test_many_metrics_scroll_inside_their_box_and_dates_are_airflows(monkeypatch):
    when = datetime(2026, 1, 2, tzinfo=timezone.utc)
    values = {f"validation_metric_{i:02d}": i / 100 for i in range(30)} | {"accuracy": 0.9}
    runs = [RunMetrics("backfill__2026-01-02", "backfill", when, when, "success", values)]
    page = _client(monkeypatch, QualityGate("accuracy", 0.85), runs).get("/dags/public/metrics").text
    box = page.split('<div class="scroll" id="runs-box">')[1].split("</div>")[0]
    assert '<table class="runs" id="runs">' in box and box.count("validation_metric_") == 30
    assert '<td class="when"><time datetime="2026-01-02T00:00:00+00:00"' in box
    assert ">2026-01-02 00:00:00 UTC</time>" in box
