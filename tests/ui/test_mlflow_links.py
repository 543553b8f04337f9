"""The Container tab's checkpoint and the MLflow links, in a real browser (issues 23.1, 24).

A real Airflow (tests/ui/conftest.py's stack, login on) whose dood config tracks runs in a real `mlflow server`
from the venv (tests/integration/mlflow_server.py), `ui_url` set. A pipeline run whose `train` step has
`checkpoint: true` writes a file into its checkpoint and waits: its Container tab shows the checkpoint's host
path and what it holds, and links the step to its MLflow run; the test follows that link into MLflow's own UI.
Once the run has finished, the Model metrics tab links the DAG run to its parent run (followed too; the ids
are checked with MLflow's client), and MLflow's experiment page with the nested runs is screenshotted
(var/ui-screenshots/mlflow-nested-runs.png; the copy in docs/images/ is that file).
"""

from __future__ import annotations

import os
import shutil

import pytest
import requests

from tests.integration.airflow_stack import stack_env
from tests.integration.mlflow_server import mlflow_server
from tests.ports import free_port
from tests.ui.conftest import HERE, UiStack, screenshot, signed_in_env, signed_in_page, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

PIPELINE = "dood_ui_track"
RELEASE = "release"  # the test writes it into the checkpoint: train then ends

# MLflow's own UI (a large React bundle) renders in headless Chromium: seen to take over 60 s at load 10 on 2 cores
MLFLOW_UI_RENDER_MS = 180_000


def tracked_config(home, mlflow_url: str) -> str:
    step = "{{image: dood-test-busybox, command: [sh, -c, '{}']}}"
    train = (
        'echo "epoch 1" > "$DOOD_CHECKPOINT_DIR/epoch-1.txt"; echo saved epoch 1; '
        f'i=0; while [ ! -e "$DOOD_CHECKPOINT_DIR/{RELEASE}" ] && [ $i -lt 600 ]; do sleep 0.5; i=$((i+1)); done'
    )
    evaluate = 'printf "{\\"accuracy\\": 0.91}" > "$DOOD_RESULT_FILE"'
    promote = 'printf "{\\"promoted\\": true}" > "$DOOD_RESULT_FILE"'
    return f"""runs_root: {home}/runs
mount_discovery: {{mode: 'off'}}
policy:
  allowed_host_roots: ['{home}']
tracking:
  mlflow:
    tracking_uri: {mlflow_url}
    ui_url: {mlflow_url}
pipelines:
  ui_track:
    schedule: null
    start_date: 2026-01-01
    retries: 0
    data_root: {home}/ml/data
    model_root: {home}/ml/models
    artifact_root: {home}/ml/artifacts
    quality_gate: {{metric: accuracy, minimum: 0.85}}
    steps:
      prepare: {step.format("echo prepared")}
      train: {{image: dood-test-busybox, command: [sh, -c, '{train}'], checkpoint: true}}
      evaluate: {step.format(evaluate)}
      promote: {step.format(promote)}
"""


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, docker_api):
    """(stack, MLflow's URL): Airflow with the config above, and the tracking server it uses."""
    home = tmp_path_factory.mktemp("airflow-ui-mlflow")
    os.chmod(home, 0o755)
    shutil.copytree(HERE / "dags", home / "dags", ignore=shutil.ignore_patterns("__pycache__"))
    (home / "data").mkdir(mode=0o755)
    port = free_port()
    env = stack_env(home, port)
    env.update(signed_in_env(home, port))
    with mlflow_server(home / "mlflow") as mlflow_url:
        (home / "dood.yaml").write_text(tracked_config(home, mlflow_url))
        stack = UiStack(home, f"http://127.0.0.1:{port}", env)
        try:
            stack.start()
            stack.token = stack.login()
            yield stack, mlflow_url
        finally:
            stack.stop()
            for c in docker_api.containers(all=True, filters={"label": [f"dood.dag_id={PIPELINE}"]}):
                docker_api.remove_container(c["Id"], force=True)


@pytest.fixture(scope="module")
def run(tracked, docker_api):
    """A run of the pipeline, its train container running (checkpoint written): (run id, container)."""
    stack, _ = tracked
    run_id = stack.trigger(PIPELINE)

    def training():
        listed = docker_api.containers(
            filters={"label": [f"dood.dag_id={PIPELINE}", "dood.task_id=train"], "status": "running"}
        )
        if not listed:
            return None
        inspected = docker_api.inspect_container(listed[0]["Id"])
        [mount] = [m for m in inspected["Mounts"] if m["Destination"] == "/dood/checkpoint"]
        return (listed[0], mount["Source"]) if os.path.exists(os.path.join(mount["Source"], "epoch-1.txt")) else None

    container, checkpoint = wait_until(training, 240, "train running with epoch-1.txt in its checkpoint", every=1)
    return run_id, container, checkpoint


def _mlflow_href(frame, selector: str, mlflow_url: str) -> str:
    link = frame.locator(selector)
    link.wait_for(timeout=30_000)
    href = link.get_attribute("href") or ""
    assert href.startswith(f"{mlflow_url}/#/experiments/"), href
    assert link.get_attribute("target") == "_blank" and "noopener" in (link.get_attribute("rel") or "")
    return href


def test_container_tab_shows_the_checkpoint_and_links_the_step_to_its_mlflow_run(tracked, run, browser):
    stack, mlflow_url = tracked
    run_id, _, checkpoint = run
    page = signed_in_page(browser, stack, "admin")
    page.goto(f"{stack.api_url}/dags/{PIPELINE}/runs/{run_id}/tasks/train/plugin/dood-container")
    frame = page.frame_locator("iframe")
    frame.locator("#checkpoint").wait_for(timeout=30_000)
    assert frame.locator("#checkpoint-path").inner_text() == checkpoint
    assert checkpoint.startswith(f"{stack.home}/ml/artifacts/dood-checkpoints/")
    assert frame.locator("#checkpoint-contents").inner_text() == "1 file(s), 8 B"
    assert frame.locator("#checkpoint-newest").inner_text() == "epoch-1.txt"
    assert frame.locator("#checkpoint-modified time").inner_text().endswith(" UTC")
    href = _mlflow_href(frame, "#mlflow-run", mlflow_url)
    parent = _mlflow_href(frame, "#mlflow-parent", mlflow_url)
    screenshot(page, "container-tab-checkpoint-mlflow")

    # The step's run in MLflow's own UI: its name is the task's, and MLflow's client agrees on the ids.
    step_id, parent_id = href.rsplit("/", 1)[1], parent.rsplit("/", 1)[1]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_url)
    step = client.get_run(step_id)
    assert step.data.tags["mlflow.parentRunId"] == parent_id, step.data.tags
    assert step.data.tags["dood.task_id"] == "train" and step.data.tags["dood.run_id"] == run_id
    assert client.get_run(parent_id).data.tags["dood.kind"] == "dag_run"
    opened = page.goto(href)
    assert opened is not None and opened.status == 200
    page.get_by_text("train", exact=True).first.wait_for(timeout=MLFLOW_UI_RENDER_MS)
    page.context.close()


def test_metrics_tab_links_the_dag_run_to_its_parent_run_with_the_steps_nested(tracked, run, browser):
    stack, mlflow_url = tracked
    run_id, _, checkpoint = run
    with open(os.path.join(checkpoint, RELEASE), "w") as out:  # train ends
        out.write("go")

    def finished():
        state = stack.api("GET", f"/dags/{PIPELINE}/dagRuns/{run_id}")["state"]
        return state if state in ("success", "failed") else None

    assert wait_until(finished, 300, f"run {run_id} to finish", every=2) == "success"
    assert not os.path.exists(checkpoint)  # removed after success (checkpoint_retention 0)

    page = signed_in_page(browser, stack, "admin")
    page.goto(f"{stack.api_url}/dags/{PIPELINE}/plugin/dood-metrics")
    frame = page.frame_locator("iframe")
    frame.locator("#runs").wait_for(timeout=30_000)
    row = frame.locator("#runs tr", has_text=run_id)
    href = _mlflow_href(row, "a.mlflow-parent", mlflow_url)
    experiment_id, parent_id = href.split("/#/experiments/")[1].split("/runs/")
    screenshot(page, "metrics-tab-mlflow")

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_url)
    parent = client.get_run(parent_id)
    assert parent.info.experiment_id == experiment_id and parent.data.tags["dood.run_id"] == run_id
    children = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    assert sorted(c.data.tags["dood.task_id"] for c in children) == ["evaluate", "prepare", "promote", "train"]

    # Evaluate's container is gone; its tab still links its run (the XCom), and says nothing of a checkpoint.
    page.goto(f"{stack.api_url}/dags/{PIPELINE}/runs/{run_id}/tasks/evaluate/plugin/dood-container")
    tab = page.frame_locator("iframe")
    step_href = _mlflow_href(tab, "#mlflow-run", mlflow_url)
    assert step_href.rsplit("/", 1)[1] in {c.info.run_id for c in children}
    assert tab.locator("#checkpoint").count() == 0

    # The parent run in MLflow's UI, then the experiment's runs with the steps nested under it.
    opened = page.goto(href)
    assert opened is not None and opened.status == 200
    page.get_by_text(run_id).first.wait_for(timeout=MLFLOW_UI_RENDER_MS)
    page.goto(f"{mlflow_url}/#/experiments/{experiment_id}/runs")
    page.get_by_text(run_id).first.wait_for(timeout=MLFLOW_UI_RENDER_MS)
    close = page.get_by_role("button", name="Close")  # MLflow 3's assistant panel, open on a first visit
    if close.count():
        close.first.click()
    page.locator("[role=gridcell]", has_text=run_id).first.locator("button").first.click()  # expand its children
    for task in ("prepare", "train", "evaluate", "promote"):
        page.get_by_text(task, exact=True).first.wait_for(timeout=30_000)
    screenshot(page, "mlflow-nested-runs")
    page.context.close()
    assert requests.get(f"{mlflow_url}/health", timeout=10).text.strip() == "OK"
