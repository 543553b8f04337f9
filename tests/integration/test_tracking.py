"""MLflow tracking (`tracking: mlflow:`) against a real tracking server, through real DAG runs (`dag.test()`).

The server is `mlflow server` from the venv (SQLite store), started by the module; the steps are busybox
containers that only report what they were given: the runs themselves are made by the operator.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from tests.integration.conftest import task_state, xcom_value
from tests.integration.mlflow_server import mlflow_server

ROOT = Path(os.environ["DOOD_TEST_ROOT"])
REPORT = (
    'printf \'{"uri": "%s", "experiment": "%s", "run": "%s", "parent": "%s", "context": %s, "model": "%s"}\' '
    '"$MLFLOW_TRACKING_URI" "$MLFLOW_EXPERIMENT_NAME" "$MLFLOW_RUN_ID" "$MLFLOW_PARENT_RUN_ID" '
    '"${MLFLOW_RUN_CONTEXT:-null}" "$DOOD_MLFLOW_MODEL_NAME" > $DOOD_RESULT_FILE'
)
# train fails its first try (a retry then continues the same MLflow run)
FLAKY = f'[ "$DOOD_TRY_NUMBER" -ge 2 ] || {{ echo first try fails; exit 1; }}; {REPORT}'


def config_text(tracking: str, name: str) -> str:
    base = ROOT / "tracking" / name
    steps = {"prepare": REPORT, "train": FLAKY if name.endswith("retry") else REPORT, "evaluate": REPORT}
    lines = [
        f"runs_root: {ROOT}/runs",
        "policy:",
        f"  allowed_host_roots: ['{ROOT}']",
        tracking,
        "pipelines:",
        f"  {name}:",
        "    schedule: null",
        "    start_date: 2026-01-01",
        f"    data_root: {base}/data",
        f"    model_root: {base}/models",
        f"    artifact_root: {base}/artifacts",
        f"    retries: {1 if name.endswith('retry') else 0}",
        "    retry_delay_seconds: 0",
        "    steps:",
    ]
    for step, command in steps.items():
        lines.append(f"      {step}: {{image: dood-test-busybox, command: [sh, -c, {json.dumps(command)}]}}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as url:
        yield url


@pytest.fixture
def client(server):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=server)


@pytest.fixture
def pipeline_dag(airflow_db, docker_api, ours):
    """The DAG dood_<name> of a one-pipeline config written for the test (tracking as given), where the DAG
    file dags/dood_it_tracking.py finds it (`dag.test()` serializes the DAGs of the DAG folder)."""
    from dood.dag_factory import build_dags

    def build(name: str, tracking: str):
        path = ROOT / "tracking-configs" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(config_text(tracking, name))
        return build_dags(config_path=str(path))[f"dood_{name}"]

    return build


def runs_of(client, experiment_id: str, **tags: str):
    where = " and ".join(f"tags.`dood.{k}` = '{v}'" for k, v in tags.items())
    return client.search_runs([experiment_id], where)


def test_one_parent_run_per_dag_run_and_each_step_nested_under_it(pipeline_dag, client, server, next_date):
    dag = pipeline_dag("it_track", f"tracking:\n  mlflow: {{tracking_uri: '{server}'}}")
    dagrun = dag.test(logical_date=next_date, run_after=next_date)
    assert dagrun.state == "success"

    experiment = client.get_experiment_by_name("it_track")  # experiment_name defaults to the pipeline's name
    assert experiment is not None, "the experiment of the pipeline was not created"
    [parent] = runs_of(client, experiment.experiment_id, kind="dag_run", run_id=dagrun.run_id)
    assert parent.data.tags["dood.dag_id"] == "dood_it_track"
    assert parent.info.run_name == dagrun.run_id
    assert parent.info.status == "FINISHED"  # the DAG's last step succeeded
    steps = {run.data.tags["dood.task_id"]: run for run in runs_of(client, experiment.experiment_id, kind="task")}
    assert set(steps) == {"prepare", "train", "evaluate"}
    for task_id, run in steps.items():
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["dood.run_id"] == dagrun.run_id
        assert run.data.tags["dood.dag_id"] == "dood_it_track"
        assert run.data.tags["dood.try_number"] == "1"
        assert run.data.tags["dood.map_index"] == "-1"
        assert run.info.status == "FINISHED"
        seen = xcom_value(dagrun, task_id)["return_value"]  # what the container was given
        assert seen["uri"] == server
        assert seen["experiment"] == "it_track"
        assert seen["run"] == run.info.run_id
        assert seen["parent"] == parent.info.run_id
        assert seen["context"]["dood.task_id"] == task_id
        assert seen["model"] == "it_track"

    # a second DAG run: a second parent run, its own steps
    later = dag.test(logical_date=next_date.replace(second=30), run_after=next_date.replace(second=30))
    parents = runs_of(client, experiment.experiment_id, kind="dag_run")
    assert sorted(run.data.tags["dood.run_id"] for run in parents) == sorted([dagrun.run_id, later.run_id])


def test_a_retried_step_continues_its_run(pipeline_dag, client, server, next_date, capfd):
    dag = pipeline_dag("it_track_retry", f"tracking:\n  mlflow: {{tracking_uri: '{server}'}}")
    dagrun = dag.test(logical_date=next_date, run_after=next_date)
    assert "first try fails" in capfd.readouterr().out
    assert task_state(dagrun, "train") == "success"
    experiment = client.get_experiment_by_name("it_track_retry")
    [train] = runs_of(client, experiment.experiment_id, kind="task", task_id="train", run_id=dagrun.run_id)
    assert train.data.tags["dood.try_number"] == "2"
    assert train.info.status == "FINISHED"
    assert xcom_value(dagrun, "train")["return_value"]["run"] == train.info.run_id
    [parent] = runs_of(client, experiment.experiment_id, kind="dag_run", run_id=dagrun.run_id)
    assert train.data.tags["mlflow.parentRunId"] == parent.info.run_id


def test_racing_tasks_agree_on_one_parent_run(client, server):
    """Two workers starting tasks of one DAG run at the same moment: both get the same parent, one is left."""
    from dood.config.tracking import MlflowTracking
    from dood.lifecycle.mlflow_runs import MlflowRuns
    from dood.naming import TaskIdentity

    settings = MlflowTracking(tracking_uri=server, experiment_name="it_race")
    barrier = threading.Barrier(4)
    got: dict[str, str] = {}

    def start(task_id: str) -> None:
        runs = MlflowRuns(settings, stack="dood")
        barrier.wait()
        step = runs.start(TaskIdentity(dag_id="dood_race", task_id=task_id, run_id="manual__race"), "race")
        got[task_id] = step.parent_run_id

    threads = [threading.Thread(target=start, args=(f"t{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    experiment = client.get_experiment_by_name("it_race")
    parents = runs_of(client, experiment.experiment_id, kind="dag_run")
    assert len(parents) == 1, [p.info.run_id for p in parents]
    assert set(got.values()) == {parents[0].info.run_id}, got
    steps = runs_of(client, experiment.experiment_id, kind="task")
    assert {run.data.tags["mlflow.parentRunId"] for run in steps} == {parents[0].info.run_id}


def test_without_tracking_the_steps_get_nothing_of_mlflow(pipeline_dag, client, next_date):
    dag = pipeline_dag("it_untracked", "")
    dagrun = dag.test(logical_date=next_date, run_after=next_date)
    assert dagrun.state == "success"
    seen = xcom_value(dagrun, "train")["return_value"]
    assert seen == {"uri": "", "experiment": "", "run": "", "parent": "", "context": None, "model": ""}
    assert client.get_experiment_by_name("it_untracked") is None
