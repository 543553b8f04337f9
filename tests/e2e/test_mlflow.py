"""MLflow in the compose stack (issue 24): the `mlflow` service of docker-compose.yml, asked with MLflow's own
Python client (from the venv: the test extra) through its port published on 127.0.0.1.

On the stack the e2e session brings up (tests/e2e/conftest.py), after test_compose.py's runs when the whole
directory runs (their runs are tracked too, and are checked here; its 3-date backfill is reused, not repeated):

- the server is the stack's own: healthy, published on 127.0.0.1 only, its runs in the `mlflow` database of
  the stack's Postgres, its artifacts under $DOOD_HOST_ROOT/mlflow (owned by its uid, mode 700);
- a REST-triggered run is one parent run in the experiment `breast_cancer` with prepare, train, evaluate and
  promote nested under it, and evaluate's metrics are eval.json's (read from the data root); every DAG run of
  the DAG that succeeded has exactly one parent run;
- the registered model `breast_cancer`'s alias `champion` is the model train logged in a run whose promote
  crowned it (loadable through the server: scikit-learn flavour, signature; its files on the data root);
- a second run with the same data and hyperparameters does not beat it: promote is skipped, the alias stays;
- a backfill of 3 dates (test_compose.py's, or one of this module's own when it runs alone) never moves it:
  no version comes from a backfill run, each backfill run's promote says why.

Opt-in like the rest of tests/e2e (DOOD_E2E=1): scripts/compose-e2e.sh tests/e2e/test_mlflow.py, under
flock /tmp/dood-compose.lock.
"""

from __future__ import annotations

import json
import stat
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from dood.operators.partition import partition_key
from tests.e2e.conftest import log, wait_for
from tests.e2e.test_compose import DAG_ID, PIPELINE, STEPS, _dag_visible, _midnight, wait_for_runs

SERVICE = "mlflow"
EXPERIMENT = MODEL = PIPELINE  # tracking.mlflow's defaults: "{pipeline}"
MLFLOW_UID = 50002  # docker-compose.yml's default MLFLOW_UID
CONF = {"n_estimators": 20, "max_depth": 4, "epochs": 2}  # small: the CI's time
TASK, DAG_RUN = "task", "dag_run"  # the tag dood.kind of a step's run and of a DAG run's parent run


@pytest.fixture(scope="module")
def mlflow_url(stack) -> str:
    if stack._down:
        pytest.fail(
            "the session's stack is already down: test_compose.py's teardown test ran before this module. "
            "It must run last (tests/e2e/conftest.py: order it after every module that uses `stack`)"
        )
    port = stack.settings.get("MLFLOW_PORT")
    assert port, f"scripts/compose-setup.sh wrote no MLFLOW_PORT into {stack.env_file}"
    url = f"http://127.0.0.1:{port}"
    wait_for(
        f"the {SERVICE} service to be healthy",
        lambda: stack.service_states().get(SERVICE) == "running/healthy",
        timeout=180,
        describe=lambda: f"services: {stack.service_states()}",
        progress=lambda: stack.service_states().get(SERVICE),
    )
    assert requests.get(f"{url}/health", timeout=10).text.strip() == "OK"
    return url


@pytest.fixture(scope="module")
def client(mlflow_url):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=mlflow_url)


def dag_runs(stack) -> list[dict]:
    return stack.api("GET", f"/dags/{DAG_ID}/dagRuns", params={"limit": 100})["dag_runs"]


def task_states(stack, run_id: str) -> dict[str, str]:
    instances = stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
    return {ti["task_id"]: ti["state"] for ti in instances}


def trigger(stack, conf: dict) -> str:
    """A run through the REST API, as the UI's trigger does; waited for until it succeeded."""
    if not _dag_visible(stack):
        wait_for(f"{DAG_ID} to be parsed", lambda: _dag_visible(stack), timeout=180, interval=3)
    stack.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
    run_id = stack.api("POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf})["dag_run_id"]
    started = time.monotonic()
    wait_for_runs(stack, [run_id], timeout=420)
    log(f"{run_id} succeeded in {time.monotonic() - started:.0f}s")
    return run_id


def settle(stack) -> None:
    """Wait until no run of the DAG is queued or running (unpausing may have started a scheduled one): the
    champion is only compared once nothing can move it."""
    active = lambda: [r["dag_run_id"] for r in dag_runs(stack) if r["state"] in ("queued", "running")]  # noqa: E731
    wait_for("no run of the DAG to be active", lambda: not active(), timeout=420, interval=3, progress=active)


def experiment_id(client) -> str:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, (
        f"no MLflow experiment {EXPERIMENT!r}: {[e.name for e in client.search_experiments()]}"
    )
    assert experiment.lifecycle_stage == "active"
    return experiment.experiment_id


def parent_and_steps(client, run_id: str):
    """The DAG run's one parent run and its nested step runs, by task id (each exactly one)."""
    exp = experiment_id(client)
    parents = client.search_runs([exp], f"tags.`dood.kind` = '{DAG_RUN}' and tags.`dood.run_id` = '{run_id}'")
    assert len(parents) == 1, f"{run_id}: {len(parents)} parent runs, not one: {[p.info.run_id for p in parents]}"
    [parent] = parents
    nested = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    steps: dict[str, list] = {}
    for run in nested:
        steps.setdefault(run.data.tags.get("dood.task_id", "?"), []).append(run)
    assert {task: len(runs) for task, runs in steps.items()} == dict.fromkeys(STEPS, 1), (
        f"{run_id}: the runs nested under {parent.info.run_id} are {[(t, len(r)) for t, r in steps.items()]}, "
        f"not one each of {STEPS}"
    )
    return parent, {task: runs[0] for task, runs in steps.items()}


def work_dir(stack, run: dict) -> Path:
    interval = [
        datetime.fromisoformat(run[k]) if run[k] else None for k in ("data_interval_start", "data_interval_end")
    ]
    return stack.host_root / "artifacts" / PIPELINE / partition_key(run["dag_run_id"], *interval)


def champion(client):
    return client.get_model_version_by_alias(MODEL, "champion")


def test_the_tracking_server_is_the_stacks_own_on_loopback_only(stack, mlflow_url):
    container = stack.service_container(SERVICE)
    bindings = container.attrs["HostConfig"]["PortBindings"]
    assert {b["HostIp"] for binds in bindings.values() for b in binds} == {"127.0.0.1"}, bindings
    assert [b["HostPort"] for b in bindings["5000/tcp"]] == [stack.settings["MLFLOW_PORT"]]
    networks = set(container.attrs["NetworkSettings"]["Networks"])
    steps_network = stack.settings["DOOD_STEPS_NETWORK"]
    assert steps_network in networks and not any(n.endswith(("docker-api", "docker-api-ro")) for n in networks)
    # the steps' network: the tracking server and nothing else of the stack (no Postgres, no Airflow, no proxy)
    on_it = stack.client.networks.get(steps_network).attrs["Containers"] or {}
    services = {stack.client.containers.get(c).labels.get("com.docker.compose.service") for c in on_it}
    assert services <= {SERVICE, None}, f"services on {steps_network}: {services}"
    user = container.attrs["Config"]["User"]
    assert user.split(":")[0] not in ("", "0", "root"), f"{SERVICE} runs as {user!r}"
    # its artifacts on the data root, its own: the steps (AIRFLOW_UID) cannot read them as files
    root = stack.host_root / "mlflow"
    info = root.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (MLFLOW_UID, 0o700), (info.st_uid, oct(info.st_mode))
    # the steps reach it by name (http://mlflow:5000, tracking.mlflow.tracking_uri) on their network, which
    # needs no more proof here than the runs they logged (below)
    # the UI is served (the full mlflow wheel's files are in the image)
    page = requests.get(f"{mlflow_url}/", timeout=30)
    assert page.status_code == 200 and "<html" in page.text[:500].lower(), page.text[:300]
    # a Host header it was not told about is refused (DNS rebinding): --allowed-hosts is in effect
    refused = requests.get(
        f"{mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1", headers={"Host": "evil.example"}, timeout=30
    )
    assert refused.status_code in (400, 403), refused.status_code


def test_a_rest_triggered_run_is_one_parent_run_with_its_steps_nested_and_eval_json_metrics(stack, client):
    today = datetime.now(timezone.utc).date().isoformat()
    conf = {**CONF, "dataset_date": today}  # the same data for the second run, whatever the clock does
    run_id = stack.state["mlflow_first_run"] = trigger(stack, conf)
    stack.state["mlflow_conf"] = conf
    settle(stack)
    parent, steps = parent_and_steps(client, run_id)
    assert parent.info.status == "FINISHED", parent.info.status
    assert parent.data.tags["dood.dag_id"] == DAG_ID and parent.data.tags["dood.stack"] == stack.settings["DOOD_STACK"]
    assert {task: run.info.status for task, run in steps.items()} == dict.fromkeys(STEPS, "FINISHED")
    for task, run in steps.items():
        assert run.data.tags["dood.run_id"] == run_id and run.data.tags["dood.task_id"] == task

    run = stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")
    evaluation = json.loads((work_dir(stack, run) / "metrics" / "eval.json").read_text())
    logged = steps["evaluate"].data.metrics
    assert logged["accuracy"] == evaluation["accuracy"] and logged["f1"] == evaluation["f1"], (logged, evaluation)
    assert steps["train"].data.params["n_estimators"] == str(CONF["n_estimators"])
    assert steps["prepare"].data.params["data_date"] == today

    # every DAG run of the DAG that succeeded (test_compose.py's too, the scheduled one) has one parent run
    succeeded = [r["dag_run_id"] for r in dag_runs(stack) if r["state"] == "success"]
    for other in succeeded:
        parent_and_steps(client, other)
    log(f"MLflow: {len(succeeded)} DAG runs, each one parent run with {len(STEPS)} step runs nested")

    # the runs are in the stack's Postgres (database mlflow), not in a file of the server's container
    user = stack.settings.get("POSTGRES_USER", "airflow")
    found = stack.compose(
        "exec", "-T", "postgres", "psql", "-U", user, "-d", "mlflow", "-tAc",
        f"select count(*) from runs where run_uuid = '{parent.info.run_id}'",  # noqa: S608 - MLflow's own id
    ).stdout.strip()  # fmt: skip
    assert found == "1", f"the parent run {parent.info.run_id} is not in Postgres' mlflow database: {found!r}"


def test_the_champion_alias_is_the_model_of_a_run_that_promoted(stack, client, mlflow_url):
    import mlflow

    first = stack.state.get("mlflow_first_run")
    if not first:
        pytest.skip("the REST-triggered run did not happen")
    crowned = champion(client)
    promoted_run = crowned.tags["dood.run_id"]
    _, steps = parent_and_steps(client, promoted_run)
    assert crowned.run_id == steps["train"].info.run_id, "the champion is the model train logged in that run"
    promote = steps["promote"].data.tags
    assert promote["dood.promoted"] == "true" and promote["dood.model_version"] == crowned.version, promote
    assert task_states(stack, promoted_run)["promote"] == "success"
    if task_states(stack, first)["promote"] == "success":  # after every other run: the first run crowned it
        assert promoted_run == first
    # (not asserted: that it is the newest version and that the one before keeps `previous`. Two promotes at
    # once -- test_compose.py's manual and scheduled runs -- both find no champion and both crown: the later
    # alias wins, `previous` is never set. The example's promote does not serialize promotions.)

    mlflow.set_tracking_uri(mlflow_url)  # models:/ URIs resolve through the global tracking URI
    try:
        info = mlflow.models.get_model_info(f"models:/{MODEL}@champion")  # read through --serve-artifacts
    finally:
        mlflow.set_tracking_uri(None)
    assert "sklearn" in info.flavors and info.signature is not None
    model_id = crowned.model_id or crowned.source.rstrip("/").rsplit("/", 1)[-1]  # source: models:/m-<id>
    artifacts = stack.host_root / "mlflow" / "artifacts"
    on_disk = [p for p in artifacts.rglob("MLmodel") if model_id in p.parts]
    assert on_disk, f"the champion's model {model_id} ({crowned.source}) is not under {artifacts}"
    stack.state["mlflow_champion"] = crowned.version
    log(f"MLflow: {MODEL} version {crowned.version} is the champion (run {promoted_run})")


def test_a_run_that_does_not_beat_the_champion_leaves_the_alias(stack, client):
    before = stack.state.get("mlflow_champion")
    if not before:
        pytest.skip("no champion was found")
    second = trigger(stack, stack.state["mlflow_conf"])  # the same data and hyperparameters: the same accuracy
    settle(stack)
    assert task_states(stack, second)["promote"] == "skipped"
    assert champion(client).version == before
    _, steps = parent_and_steps(client, second)
    promote = steps["promote"]
    assert promote.data.tags["dood.promoted"] == "false"
    assert "is not greater than the champion's" in promote.data.tags["dood.promotion_reason"], promote.data.tags
    assert promote.info.status == "FINISHED"  # a skip is no failure


def test_a_backfill_of_three_dates_never_moves_the_alias(stack, client):
    before = stack.state.get("mlflow_champion")
    if not before:
        pytest.skip("no champion was found")
    backfills = [r for r in dag_runs(stack) if r["run_type"] == "backfill" and r["state"] == "success"]
    if len(backfills) < 3:  # alone (test_compose.py did not run): a backfill of this module's own
        today = datetime.now(timezone.utc).date()
        first = today - timedelta(days=28) - timedelta(days=(today.weekday() + 1) % 7)
        dates = [first + timedelta(weeks=i) for i in range(3)]
        stack.compose(
            "exec", "-T", "airflow-scheduler", "airflow", "backfill", "create", "--dag-id", DAG_ID,
            "--from-date", dates[0].isoformat(), "--to-date", dates[-1].isoformat(), timeout=180,
        )  # fmt: skip
        run_ids = [f"backfill__{_midnight(d).isoformat()}" for d in dates]
        started = time.monotonic()
        wait_for_runs(stack, run_ids, timeout=600)
        log(f"3 backfill runs succeeded in {time.monotonic() - started:.0f}s")
        backfills = [r for r in dag_runs(stack) if r["dag_run_id"] in run_ids]
    else:
        log(f"MLflow: the {len(backfills)} backfill runs of test_compose.py, checked")
    assert len(backfills) >= 3
    assert champion(client).version == before
    for run in backfills:
        _, steps = parent_and_steps(client, run["dag_run_id"])
        promote = steps["promote"].data.tags
        assert promote["dood.promoted"] == "false", (run["dag_run_id"], promote)
        assert "backfill" in promote["dood.promotion_reason"], promote
    registered_by = {
        v.version: v.tags.get("dood.run_id", "") for v in client.search_model_versions(f"name = '{MODEL}'")
    }
    assert not [v for v, r in registered_by.items() if r.startswith("backfill__")], registered_by
