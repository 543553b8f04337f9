"""The `tracking: mlflow:` config section and what a step's container is handed (no server: see
tests/integration/test_tracking.py for the runs themselves)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dood.config.model import parse_config
from dood.exceptions import DoodConfigError
from dood.lifecycle.mlflow_runs import StepRun, _filter, end_status, step_environment


def tracking(**fields):
    return parse_config({"tracking": {"mlflow": {"tracking_uri": "http://mlflow:5000", **fields}}}).tracking.mlflow


def test_off_by_default():
    assert parse_config({}).tracking.mlflow is None


def test_defaults_and_names():
    settings = tracking()
    assert settings.airflow_uri == "http://mlflow:5000"
    assert settings.names(pipeline="retrain", dag_id="dood_retrain", stack="dood") == ("retrain", "retrain")
    assert settings.names(pipeline=None, dag_id="etl", stack="dood") == ("etl", "etl")
    named = tracking(experiment_name="{stack}/{pipeline}", registered_model_name="{stack}-{dag_id}")
    assert named.names(pipeline="retrain", dag_id="dood_retrain", stack="team-a") == (
        "team-a/retrain",
        "team-a-dood_retrain",
    )


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"tracking_uri": "ftp://mlflow"}, "tracking.mlflow.tracking_uri: Value error, must be an http://"),
        ({"tracking_uri": "http://"}, "names no server"),
        ({"tracking_uri": "file:///tmp/mlruns"}, "a local file store is not supported"),
        ({"experiment_name": "{team}"}, "tracking.mlflow.experiment_name: Value error, '{team}' uses unknown"),
        ({"registered_model_name": "{pipeline"}, "not a valid name template"),
        ({"credentials_env": ["lower"]}, "no environment variable names"),
        ({"tracking_uri": "http://mlflow:5000", "experiment": "x"}, "tracking.mlflow.experiment: Extra inputs"),
    ],
)
def test_bad_values_name_the_field(fields, expected):
    with pytest.raises(DoodConfigError, match=None) as error:
        tracking(**fields)
    assert expected in str(error.value)


def test_credentials_in_the_uri_are_refused_and_never_echoed():
    with pytest.raises(DoodConfigError) as error:
        tracking(tracking_uri="http://alice:s3cret@mlflow:5000")
    assert "must not hold credentials" in str(error.value)
    assert "s3cret" not in str(error.value) and "alice" not in str(error.value)


def test_step_environment_public_and_private():
    settings = tracking(register_models=False)
    step = StepRun("retrain", "1", "parent-id", "run-id", "retrain", {"dood.task_id": "train"})
    environ = {"MLFLOW_TRACKING_PASSWORD": "pw", "MLFLOW_TRACKING_USERNAME": "", "OTHER": "x"}
    public, private = step_environment(step, settings, environ)
    assert public["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert public["MLFLOW_EXPERIMENT_NAME"] == "retrain"
    assert public["MLFLOW_RUN_ID"] == "run-id"
    assert public["MLFLOW_PARENT_RUN_ID"] == "parent-id"
    assert public["MLFLOW_RUN_CONTEXT"] == '{"dood.task_id": "train"}'
    assert public["DOOD_MLFLOW_REGISTER_MODELS"] == "false"
    assert private == {"MLFLOW_TRACKING_PASSWORD": "pw"}  # set ones only, never in the public environment
    assert "pw" not in str(public)


def test_end_status():
    from airflow.sdk.exceptions import AirflowSkipException

    assert end_status(None) == "FINISHED"
    assert end_status(AirflowSkipException("promote kept the champion")) == "FINISHED"
    assert end_status(SystemExit("killed")) == "KILLED"
    assert end_status(RuntimeError("exit 1")) == "FAILED"


def test_filter_quotes_values_and_refuses_what_mlflow_cannot_say():
    assert _filter({"dood.run_id": "manual__2026-01-01T00:00:00+00:00", "dood.kind": "task"}) == (
        "tags.`dood.kind` = 'task' and tags.`dood.run_id` = 'manual__2026-01-01T00:00:00+00:00'"
    )
    assert _filter({"dood.run_id": "it's"}) == 'tags.`dood.run_id` = "it\'s"'
    with pytest.raises(DoodConfigError, match="both ' and"):
        _filter({"dood.run_id": "'\""})


def test_the_operators_and_the_dag_factory_never_import_mlflow():
    """Tracking off (the default) costs nothing: MLflow is imported only when a step is tracked."""
    code = (
        "import sys, dood.dag_factory, dood.operators.pipeline_step, dood.lifecycle.mlflow_runs, dood.config.model; "
        "print(sorted(m for m in sys.modules if m == 'mlflow' or m.startswith('mlflow.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout
