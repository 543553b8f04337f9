"""The example pipeline's steps (dood-ml-example) logging to a real MLflow server, through real DAG runs.

The server listens on the Docker bridge's gateway address: reachable from the host (Airflow's side) and from
the step containers on the default bridge, from nowhere else.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest

from tests.integration.conftest import task_state, xcom_value
from tests.integration.mlflow_server import mlflow_server

ROOT = Path(os.environ["DOOD_TEST_ROOT"])
ML_IMAGE = "dood-ml-example:latest"
NAME = "it_track_ml"
CONF = {"n_estimators": 30, "max_depth": 3, "min_accuracy": 0.5}


@pytest.fixture(scope="module")
def server(tmp_path_factory, docker_api):
    try:
        docker_api.inspect_image(ML_IMAGE)
    except Exception:  # noqa: BLE001 - any failure means: not there
        pytest.fail(f"{ML_IMAGE} is missing. Build it: bash scripts/build-images.sh ml")
    gateway = docker_api.inspect_network("bridge")["IPAM"]["Config"][0]["Gateway"]
    with mlflow_server(tmp_path_factory.mktemp("mlflow-steps"), address=gateway) as url:
        yield url


@pytest.fixture
def dag(server, airflow_db, ours):
    """The pipeline's DAG, its config where dags/dood_it_tracking.py finds it (`dag.test()` serializes it)."""
    from dood.dag_factory import build_dags

    base = ROOT / "tracking-steps"
    steps = "\n".join(
        f"      {step}: {{image: dood-ml-example, command: [python, /opt/app/{step}.py]}}"
        for step in ("prepare", "train", "evaluate", "promote")
    )
    path = ROOT / "tracking-configs" / f"{NAME}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"""runs_root: {ROOT}/runs
policy:
  allowed_host_roots: ['{ROOT}']
tracking:
  mlflow: {{tracking_uri: '{server}'}}
pipelines:
  {NAME}:
    schedule: null
    start_date: 2026-01-01
    data_root: {base}/data
    model_root: {base}/models
    artifact_root: {base}/artifacts
    retries: 0
    hyperparameters:
      n_estimators: {{type: integer, default: 30, minimum: 10, maximum: 500}}
      max_depth: {{type: integer, default: 3, minimum: 1, maximum: 32}}
      epochs: {{type: integer, default: 3, minimum: 1, maximum: 100}}
    steps:
{steps}
"""
    )
    return build_dags(config_path=str(path))[f"dood_{NAME}"]


def step_runs(client, experiment_id: str, run_id: str) -> dict:
    where = f"tags.`dood.kind` = 'task' and tags.`dood.run_id` = '{run_id}'"
    return {run.data.tags["dood.task_id"]: run for run in client.search_runs([experiment_id], where)}


def eval_json(run_id: str) -> dict:
    [work] = [p for p in (ROOT / "tracking-steps" / "artifacts" / NAME).iterdir() if run_id.split("__")[0] in p.name]
    return json.loads((work / "metrics" / "eval.json").read_text())


def test_steps_log_params_metrics_and_the_model_and_promote_moves_the_champion_alias(dag, server, next_date):
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=server)
    first = dag.test(logical_date=next_date, run_after=next_date, run_conf=CONF)
    assert first.state == "success"
    assert task_state(first, "promote") == "success"
    experiment = client.get_experiment_by_name(NAME)
    [parent] = client.search_runs(
        [experiment.experiment_id], f"tags.`dood.kind` = 'dag_run' and tags.`dood.run_id` = '{first.run_id}'"
    )
    runs = step_runs(client, experiment.experiment_id, first.run_id)
    assert set(runs) == {"prepare", "train", "evaluate", "promote"}
    assert {run.data.tags["mlflow.parentRunId"] for run in runs.values()} == {parent.info.run_id}

    # the metrics the quality gate reads, as eval.json has them
    metrics = eval_json(first.run_id)
    logged = runs["evaluate"].data.metrics
    assert logged["accuracy"] == metrics["accuracy"] and logged["f1"] == metrics["f1"]
    assert logged["min_accuracy"] == metrics["min_accuracy"] == 0.5
    assert runs["train"].data.params["n_estimators"] == "30"
    assert runs["train"].data.params["epochs"] == "3"
    assert "train_accuracy" in runs["train"].data.metrics
    assert runs["prepare"].data.params["data_date"]

    # the model: scikit-learn flavour, a signature and an input example; registered, with the alias champion
    champion = client.get_model_version_by_alias(NAME, "champion")
    assert champion.run_id == runs["train"].info.run_id
    mlflow.set_tracking_uri(server)  # models:/ URIs resolve through the global tracking URI
    try:
        info = mlflow.models.get_model_info(f"models:/{NAME}@champion")
    finally:
        mlflow.set_tracking_uri(None)
    assert "sklearn" in info.flavors
    assert info.signature is not None and info.signature.inputs.to_dict()
    assert info.saved_input_example_info is not None
    assert runs["promote"].data.tags["dood.promoted"] == "true"
    assert xcom_value(first, "promote")["return_value"]["mlflow"]["version"] == champion.version

    # a run on older data never crowns its model: promote is skipped, the alias stays
    older = next_date - timedelta(days=3)
    second = dag.test(logical_date=older, run_after=older, run_conf=CONF)
    assert task_state(second, "promote") == "skipped"
    assert client.get_model_version_by_alias(NAME, "champion").version == champion.version
    promote = step_runs(client, experiment.experiment_id, second.run_id)["promote"]
    assert promote.data.tags["dood.promoted"] == "false"
    assert "before the champion's" in promote.data.tags["dood.promotion_reason"]
    assert promote.info.status == "FINISHED"  # a skip is no failure

    # a forced promotion: a new champion, the one before it keeps the alias previous
    later = next_date + timedelta(seconds=1)
    third = dag.test(logical_date=later, run_after=later, run_conf={**CONF, "force_promote": True})
    assert task_state(third, "promote") == "success"
    new = client.get_model_version_by_alias(NAME, "champion")
    assert new.version != champion.version
    assert new.run_id == step_runs(client, experiment.experiment_id, third.run_id)["train"].info.run_id
    assert client.get_model_version_by_alias(NAME, "previous").version == champion.version
