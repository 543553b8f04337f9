"""Data-aware retraining under a real scheduler (tests/integration/airflow_stack.py: scheduler, dag-processor,
triggerer, api-server), with the repository's own DAG files (dags/dood_pipelines.py, dags/dood_example_assets.py)
and the example image: an asset event created through the REST API starts a retraining whose promote starts
the deploy DAG with the model's metadata; the example's ingest DAG lands a partition and starts one whose
promote keeps the champion and emits nothing; a backfill's promote never emits a model event.

One stack for the module; every wait is for a state read through the REST API, never a fixed sleep.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.airflow_stack import engine_containers

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
PIPELINE, BACKFILLED = "sched_assets", "sched_assets_b"  # dood_sched_*: the stack removes their containers
DAG_ID, DAG_B = f"dood_{PIPELINE}", f"dood_{BACKFILLED}"
INGEST, DEPLOY = f"{DAG_ID}_ingest", f"{DAG_ID}_deploy"
DATA_DATE = "2026-11-02"  # every run of PIPELINE trains on it: the first crowns, an equal one cannot
STEP = "{{image: dood-ml-example, command: [python, /opt/app/{}.py]}}"


def pipeline_yaml(home: Path, name: str, schedule: str) -> str:
    root = home / name
    steps = "\n".join(f"      {step}: {STEP.format(step)}" for step in ("prepare", "train", "evaluate", "promote"))
    return f"""  {name}:
    schedule: {schedule}
    start_date: 2026-01-01
    max_active_runs: 2
    retries: 0
    data_root: {root}/data
    model_root: {root}/models
    artifact_root: {root}/artifacts
    inputs: [{{uri: "file://{root}/data", name: {name}_data}}]
    model_asset: {{uri: "file://{root}/models/champion", name: {name}_model}}
    hyperparameters:
      n_estimators: {{type: integer, default: 12, minimum: 1, maximum: 50}}
      max_depth: {{type: integer, default: 2, minimum: 1, maximum: 8}}
      epochs: {{type: integer, default: 1, minimum: 1, maximum: 5}}
    quality_gate: {{minimum: 0.5}}
    steps:
{steps}
"""


@pytest.fixture(scope="module")
def assets(airflow_stack, docker_api):
    """The stack's dood config given two pipelines with assets (one scheduled on its data only, one on data or
    daily), the repository's DAG files copied in, every DAG parsed; the asset ids by name."""
    docker_api.inspect_image("dood-ml-example:latest")  # bash scripts/build-images.sh ml
    home = airflow_stack.home
    config = home / "dood.yaml"
    config.write_text(
        config.read_text()
        + "pipelines:\n"
        + pipeline_yaml(home, PIPELINE, f"{{assets: {PIPELINE}_data}}")
        + pipeline_yaml(home, BACKFILLED, f'{{assets: {BACKFILLED}_data, cron: "@daily"}}')
    )
    for name in ("dood_pipelines.py", "dood_pipeline_errors.py", "dood_example_assets.py"):
        shutil.copy(REPO / "dags" / name, home / "dags" / name)
    for dag_id in (DAG_ID, INGEST, DEPLOY, DAG_B):
        airflow_stack._wait_until(lambda d=dag_id: _parsed(airflow_stack, d), 120, f"DAG {dag_id} to be parsed")
    errors = airflow_stack.api("GET", "/importErrors")["import_errors"]
    assert not [e for e in errors if "dood_" in e["filename"]], errors
    for dag_id in (DAG_ID, INGEST, DEPLOY):
        airflow_stack.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
    found = {a["name"]: a for a in airflow_stack.api("GET", "/assets", params={"limit": 100})["assets"]}
    return {name: found[name]["id"] for name in found if name.startswith("sched_assets")}


def test_a_rest_asset_event_starts_a_retraining_whose_promote_starts_deploy_with_the_model(
    airflow_stack, assets, docker_api
):
    event = airflow_stack.api(
        "POST", "/assets/events", json={"asset_id": assets[f"{PIPELINE}_data"], "extra": {"dataset_date": DATA_DATE}}
    )
    run_id = _wait_for_new_run(airflow_stack, DAG_ID, "asset_triggered", seen=set())
    assert _wait_run_ended(airflow_stack, DAG_ID, run_id) == "success", _tasks(airflow_stack, DAG_ID, run_id)
    assert airflow_stack.task(DAG_ID, run_id, "promote")["state"] == "success"
    assert airflow_stack.xcom(DAG_ID, run_id, "prepare")["data_date"] == DATA_DATE  # the event's date, as Param
    consumed = airflow_stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/upstreamAssetEvents")["asset_events"]
    assert [e["id"] for e in consumed] == [event["id"]]

    model_events = _events(airflow_stack, assets[f"{PIPELINE}_model"])
    assert len(model_events) == 1, model_events
    extra = model_events[0]["extra"]
    model = airflow_stack.home / PIPELINE / "models" / PIPELINE / "champion" / "model.joblib"
    assert extra["run_id"] == run_id and extra["dag_id"] == DAG_ID and extra["pipeline"] == PIPELINE
    assert extra["metrics"] == airflow_stack.xcom(DAG_ID, run_id, "evaluate")
    assert extra["model_path"] == str(model)
    assert extra["model_digest"] == "sha256:" + hashlib.sha256(model.read_bytes()).hexdigest()
    assert extra["reason"] == "first champion"

    deploy_run = _wait_for_new_run(airflow_stack, DEPLOY, "asset_triggered", seen=set())
    assert _wait_run_ended(airflow_stack, DEPLOY, deploy_run) == "success"
    read = airflow_stack.api("GET", f"/dags/{DEPLOY}/dagRuns/{deploy_run}/upstreamAssetEvents")["asset_events"]
    assert [(e["id"], e["extra"]) for e in read] == [(model_events[0]["id"], extra)]
    deployed = airflow_stack.xcom(DEPLOY, deploy_run, "deploy")
    assert deployed["model_digest"] == extra["model_digest"] and deployed["run_id"] == run_id
    assert f"would deploy {model}" in airflow_stack.task_log(DEPLOY, deploy_run, 1, "deploy")
    assert not engine_containers(docker_api, DEPLOY)  # deploy runs no container


def test_the_ingest_dag_starts_a_retraining_whose_promote_keeps_the_champion_and_emits_nothing(airflow_stack, assets):
    before = {r["dag_run_id"] for r in _runs(airflow_stack, DAG_ID)}
    model_events = len(_events(airflow_stack, assets[f"{PIPELINE}_model"]))
    deploys = len(_runs(airflow_stack, DEPLOY))
    ingest = airflow_stack.api(
        "POST", f"/dags/{INGEST}/dagRuns", json={"logical_date": None, "conf": {"dataset_date": DATA_DATE}}
    )["dag_run_id"]
    assert _wait_run_ended(airflow_stack, INGEST, ingest) == "success", _tasks(airflow_stack, INGEST, ingest)
    partition = airflow_stack.home / PIPELINE / "data" / PIPELINE / DATA_DATE
    assert (partition / "part.csv").read_text().startswith("mean radius,")
    landed = _events(airflow_stack, assets[f"{PIPELINE}_data"])[-1]
    assert landed["source_run_id"] == ingest
    assert landed["extra"] == {"dataset_date": DATA_DATE, "partition": str(partition), "rows": 455}

    run_id = _wait_for_new_run(airflow_stack, DAG_ID, "asset_triggered", seen=before)
    assert _wait_run_ended(airflow_stack, DAG_ID, run_id) == "success", _tasks(airflow_stack, DAG_ID, run_id)
    assert airflow_stack.task(DAG_ID, run_id, "promote")["state"] == "skipped"
    assert "not promoting: new accuracy" in airflow_stack.task_log(DAG_ID, run_id, 1, "promote")
    assert str(partition) in airflow_stack.task_log(DAG_ID, run_id, 1, "prepare")  # $DOOD_ASSET_EVENTS, logged
    assert len(_events(airflow_stack, assets[f"{PIPELINE}_model"])) == model_events
    assert len(_runs(airflow_stack, DEPLOY)) == deploys


def test_a_backfill_never_emits_a_model_event(airflow_stack, assets):
    """The pipeline scheduled on data or daily: unpaused, its latest day gets a scheduled run (which may crown
    and emit: not a backfill); the backfilled day's promote is skipped (promotion.from_backfill is off)."""
    airflow_stack.api("PATCH", f"/dags/{DAG_B}", json={"is_paused": False})
    body = {"dag_id": DAG_B, "from_date": "2026-11-01T00:00:00Z", "to_date": "2026-11-01T00:00:00Z"}
    airflow_stack.api("POST", "/backfills", json={**body, "max_active_runs": 1})
    run_id = _wait_for_new_run(airflow_stack, DAG_B, "backfill", seen=set())
    assert _wait_run_ended(airflow_stack, DAG_B, run_id) == "success", _tasks(airflow_stack, DAG_B, run_id)
    promote = airflow_stack.task(DAG_B, run_id, "promote")
    assert promote["state"] == "skipped"
    assert "this is a backfill run" in airflow_stack.task_log(DAG_B, run_id, 1, "promote")
    emitted = _events(airflow_stack, assets[f"{BACKFILLED}_model"])
    assert all(e["source_run_id"] != run_id and e["extra"]["run_type"] != "backfill" for e in emitted), emitted


# --- helpers ---


def _parsed(stack, dag_id: str) -> bool:
    try:
        stack.api("GET", f"/dags/{dag_id}")
    except AssertionError:
        return False
    return True


def _runs(stack, dag_id: str) -> list[dict]:
    return stack.api("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"]


def _events(stack, asset_id: int) -> list[dict]:
    """The asset's events. Airflow 3.3's GET /assets/events answers 500 while a DAG run that an event created is
    still queued (its response model requires `created_dagruns[].start_date`; seen on a fresh, busy CI machine
    right after promote's event created the deploy run): waited out, read-only, until that run starts."""
    answer: dict[str, Any] = {}

    def answered() -> bool:
        response = requests.get(
            f"{stack.api_url}/api/v2/assets/events", params={"asset_id": asset_id, "limit": 100}, timeout=60
        )
        answer.update(status=response.status_code, text=response.text[:300])
        if response.status_code == 500:
            return False
        response.raise_for_status()
        answer["events"] = response.json()["asset_events"]
        return True

    stack._wait_until(
        answered,
        180,
        f"GET /assets/events?asset_id={asset_id} to answer other than 500 (a run an event created to start)",
        every=1,
    )
    return sorted(answer["events"], key=lambda e: e["id"])


def _tasks(stack, dag_id: str, run_id: str) -> dict[str, str]:
    tis = stack.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
    return {ti["task_id"]: ti["state"] for ti in tis}


def _wait_for_new_run(stack, dag_id: str, run_type: str, seen: set[str], timeout: float = 180) -> str:
    found: list[str] = []

    def appeared() -> bool:
        found[:] = [
            r["dag_run_id"] for r in _runs(stack, dag_id) if r["run_type"] == run_type and r["dag_run_id"] not in seen
        ]
        return bool(found)

    stack._wait_until(appeared, timeout, f"a new {run_type} run of {dag_id}", every=1)
    assert len(found) == 1, found
    return found[0]


def _wait_run_ended(stack, dag_id: str, run_id: str, timeout: float = 420) -> str:
    states: list[str] = []

    def ended() -> bool:
        states.append(stack.run_state(dag_id, run_id))
        return states[-1] in ("success", "failed")

    stack._wait_until(ended, timeout, f"{dag_id}/{run_id} to end (last: {states[-1:]})", every=1)
    return states[-1]
