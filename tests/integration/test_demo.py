"""`make demo`'s script (scripts/demo.sh) end to end, as on a fresh machine: a new Airflow home, a new demo
directory, the example pipeline (config/dood.yaml's, renamed and with its roots under the test root). The demo
kills train's first try after epoch 3 on purpose, and runs MLflow on a local store it starts and stops.

What counts is what the store holds, read here with MLflow's own client straight from its SQLite file (the
demo's server is gone by then), not the demo's own check: one parent run per DAG run, the four step runs nested
under it, train's one run continued by its retry (it logged resumed_from_epoch 3)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROOT = Path(os.environ["DOOD_TEST_ROOT"])
PIPELINE = "demo_check"  # DAG dood_demo_check: not dood_it*, which other tests' `ours` fixture removes
KILL_EPOCH = 3


def demo_config(base: Path) -> Path:
    """config/dood.yaml's breast_cancer pipeline as PIPELINE, its roots and the runs root under `base`."""
    shipped = yaml.safe_load((REPO / "config" / "dood.yaml").read_text())
    pipeline = dict(shipped["pipelines"]["breast_cancer"])
    pipeline.update(
        data_root=str(base / "data"), model_root=str(base / "models"), artifact_root=str(base / "artifacts")
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
        "DEMO_DATE": "2026-11-02",
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
