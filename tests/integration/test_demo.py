"""`make demo`'s script (scripts/demo.sh) end to end, as on a fresh machine: a new Airflow home, a new demo
directory, the example pipeline (config/dood.yaml's, renamed and with its roots under the test root). The demo
kills train's first try after epoch 3 on purpose, and runs MLflow on a local store it starts and stops.

What counts is what the store holds, read here with MLflow's own client straight from its SQLite file (the
demo's server is gone by then), not the demo's own check: one parent run per DAG run, the four step runs nested
under it, train's one run continued by its retry (it logged resumed_from_epoch 3).

The asset chain likewise, from the demo's Airflow metadata DB (read with Airflow's models in a process on that
DB): the ingest run's data event, prepare's result naming the landed partition, promote's model event, deploy's
result naming that event and its "would deploy" line in its run's log, the runs queued for a scheduler; and the
landed partition gives prepare the very split it samples without it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROOT = Path(os.environ["DOOD_TEST_ROOT"])
PIPELINE = "demo_check"  # DAG dood_demo_check: not dood_it*, which other tests' `ours` fixture removes
KILL_EPOCH = 3
DATE = "2026-11-02"
#: Run in a process on the demo's Airflow DB: its asset events, queued runs, DAG runs and task results as JSON.
RECORDS = """
import json
from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
from airflow.models.dagrun import DagRun
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
from sqlalchemy import select
with create_session() as s:
    names = {a.id: a.name for a in s.scalars(select(AssetModel))}
    print(json.dumps({
        "events": [
            {"id": e.id, "asset": names[e.asset_id], "extra": e.extra, "dag_id": e.source_dag_id,
             "run_id": e.source_run_id}
            for e in s.scalars(select(AssetEvent).order_by(AssetEvent.id))
        ],
        "queued": sorted([names[q.asset_id], q.target_dag_id] for q in s.scalars(select(AssetDagRunQueue))),
        "runs": {r.dag_id: [r.run_id, r.state] for r in s.scalars(select(DagRun))},
        "results": {
            x.task_id: XComModel.deserialize_value(x)
            for x in s.scalars(select(XComModel).where(XComModel.key == "return_value"))
        },
    }, default=str))
"""


def demo_config(base: Path) -> Path:
    """config/dood.yaml's breast_cancer pipeline as PIPELINE, its roots and the runs root under `base`."""
    shipped = yaml.safe_load((REPO / "config" / "dood.yaml").read_text())
    pipeline = dict(shipped["pipelines"]["breast_cancer"])
    pipeline.update(
        data_root=str(base / "data"),
        model_root=str(base / "models"),
        artifact_root=str(base / "artifacts"),
        inputs=[{"uri": f"file://{base}/data/{PIPELINE}", "name": f"{PIPELINE}_data"}],
        model_asset={"uri": f"file://{base}/models/{PIPELINE}/champion", "name": f"{PIPELINE}_model"},
        schedule={"assets": f"{PIPELINE}_data", "cron": "@weekly"},
    )
    config = {
        "runs_root": str(ROOT / "runs"),
        "policy": {"allowed_host_roots": [str(ROOT)]},
        "pipelines": {PIPELINE: pipeline},
    }
    path = base / "dood.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.timeout(900)  # a fresh Airflow DB, an MLflow server, four steps and a retry on 2 shared cores
def test_the_demo_resumes_the_killed_training_and_leaves_one_parent_run_with_the_steps_nested(tmp_path, docker_api):
    from mlflow.tracking import MlflowClient

    base = ROOT / "demo-check" / tmp_path.name
    base.mkdir(parents=True)
    demo_dir = tmp_path / "demo"
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__", "DOOD_", "DEMO_"))}
    env = {
        **keep,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "DOOD_CONFIG": str(demo_config(base)),
        "PIPELINE": PIPELINE,
        "DEMO_DIR": str(demo_dir),
        "DEMO_DATE": DATE,
        "DEMO_KILL_EPOCH": str(KILL_EPOCH),
    }
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "demo.sh")], env=env, capture_output=True, text=True, timeout=840
    )
    said = done.stdout + done.stderr
    assert done.returncode == 0, f"the demo failed ({done.returncode}):\n{said[-6000:]}"
    assert f"killed dood-dood_{PIPELINE}-train-t1-" in said, said[-4000:]
    assert f"[train] resumed from epoch {KILL_EPOCH}" in said, said[-4000:]
    store = demo_dir / "mlflow"
    assert f"mlflow ui --backend-store-uri sqlite:///{store}/mlflow.db" in said, said[-2000:]
    pid = int((store / "server.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the demo stopped its MLflow server

    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    experiment = client.get_experiment_by_name(PIPELINE)
    assert experiment is not None, f"no experiment {PIPELINE!r} in the demo's store"
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("dood.kind") == "dag_run"]
    steps = [r for r in runs if r.data.tags.get("dood.kind") == "task"]
    assert len(parents) == 1, [r.data.tags for r in parents]
    [parent] = parents
    assert parent.data.tags["dood.dag_id"] == f"dood_{PIPELINE}"
    assert parent.info.status == "FINISHED"
    assert sorted(r.data.tags["dood.task_id"] for r in steps) == ["evaluate", "prepare", "promote", "train"]
    assert {r.data.tags["mlflow.parentRunId"] for r in steps} == {parent.info.run_id}
    assert {r.data.tags["dood.run_id"] for r in steps} == {parent.data.tags["dood.run_id"]}
    [train] = [r for r in steps if r.data.tags["dood.task_id"] == "train"]
    assert train.data.tags["dood.try_number"] == "2", "the retry continues train's one run"
    assert train.data.metrics["resumed_from_epoch"] == KILL_EPOCH
    epochs = yaml.safe_load(Path(env["DOOD_CONFIG"]).read_text())["pipelines"][PIPELINE]["hyperparameters"]["epochs"]
    assert train.data.metrics["epochs_run"] == epochs["default"] - KILL_EPOCH
    assert (base / "artifacts" / "dood-checkpoints").exists()
    left = [p for p in (base / "artifacts" / "dood-checkpoints").rglob("run-*") if p.is_dir()]
    assert not left, f"checkpoint directories left after the demo's success: {left}"

    # the asset chain, from the demo's Airflow DB
    read = subprocess.run([sys.executable, "-c", RECORDS], env=env, capture_output=True, text=True, timeout=120)
    assert read.returncode == 0, read.stderr[-3000:]
    records = json.loads(read.stdout.strip().splitlines()[-1])
    dag_id, ingest, deploy = f"dood_{PIPELINE}", f"dood_{PIPELINE}_ingest", f"dood_{PIPELINE}_deploy"
    assert {dag: state for dag, (_, state) in records["runs"].items()} == {
        ingest: "success",
        dag_id: "success",
        deploy: "success",
    }, records["runs"]
    run_id = records["runs"][dag_id][0]
    partition = base / "data" / PIPELINE / DATE
    [data_event] = [e for e in records["events"] if e["asset"] == f"{PIPELINE}_data"]
    assert (data_event["dag_id"], data_event["run_id"]) == (ingest, records["runs"][ingest][0])
    assert data_event["extra"] == {"dataset_date": DATE, "partition": str(partition), "rows": 455}
    assert (partition / "part.csv").read_text().startswith("mean radius,")
    prepared = records["results"]["prepare"]
    assert (prepared["partition"], prepared["rows"]) == (f"{PIPELINE}/{DATE}/part.csv", 455), prepared
    assert f"[prepare] read the landed partition /dood/input/{PIPELINE}/{DATE}/part.csv (455 rows)" in said

    [model_event] = [e for e in records["events"] if e["asset"] == f"{PIPELINE}_model"]
    model = base / "models" / PIPELINE / "champion" / "model.joblib"
    assert (model_event["dag_id"], model_event["run_id"]) == (dag_id, run_id)
    extra = model_event["extra"]
    assert (extra["run_id"], extra["reason"], extra["model_path"]) == (run_id, "first champion", str(model))
    assert extra["model_digest"] == "sha256:" + hashlib.sha256(model.read_bytes()).hexdigest()
    assert extra["metrics"] == records["results"]["evaluate"]

    deployed = records["results"]["deploy"]
    assert (deployed["source"], deployed["event_id"], deployed["model_digest"]) == (
        "newest",
        model_event["id"],
        extra["model_digest"],
    ), deployed
    [deploy_log] = demo_dir.glob(f"{deploy}-*.log")  # `airflow dags test`'s own output of the deploy run
    logged = deploy_log.read_text()
    assert f"would deploy {model} ({extra['model_digest']})" in logged, logged[-3000:]
    assert f"the newest model event, of run {run_id}" in logged, logged[-3000:]
    # no scheduler ran: the runs the two events call for are still queued
    assert records["queued"] == [[f"{PIPELINE}_data", dag_id], [f"{PIPELINE}_model", deploy]], records["queued"]
    assert f"a scheduler would now start {dag_id} (on {PIPELINE}_data" in said, said[-3000:]

    # the landed partition gives prepare the split it samples without one: metrics do not depend on it
    [work] = (base / "artifacts" / PIPELINE).glob("*/data/train.csv")
    sampled = docker_api.create_container(
        "dood-ml-example:latest",
        ["sh", "-c", "python /opt/app/prepare.py >/dev/null && cat /tmp/w/data/train.csv /tmp/w/data/test.csv"],
        environment={"DOOD_WORK_DIR": "/tmp/w", "DOOD_PARAMS": json.dumps({"dataset_date": DATE})},
        name=f"dood_it_demo_sample_{tmp_path.name}"[:60],
    )["Id"]
    try:
        docker_api.start(sampled)
        assert docker_api.wait(sampled, timeout=120)["StatusCode"] == 0, docker_api.logs(sampled)[-2000:]
        split = docker_api.logs(sampled, stderr=False).decode()
    finally:
        docker_api.remove_container(sampled, force=True)
    assert split == work.read_text() + (work.parent / "test.csv").read_text()
