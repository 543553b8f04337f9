"""The retraining pipeline DAGs (built from config by the factory) on the real engine, through `dag.test()`."""

from __future__ import annotations

import json
import os
import stat
from datetime import timedelta
from pathlib import Path

import pytest

from tests.integration.conftest import task_state, xcom_value

ROOT = Path(os.environ["DOOD_TEST_ROOT"])
ML_IMAGE = "dood-ml-example:latest"


@pytest.fixture(scope="module")
def ml_image(docker_api):
    try:
        docker_api.inspect_image(ML_IMAGE)
    except Exception:  # noqa: BLE001
        pytest.fail(f"{ML_IMAGE} is missing. Build it: bash scripts/build-images.sh ml")


def partitions(pipeline: str) -> list[Path]:
    base = ROOT / pipeline.split("_", 1)[1] / "artifacts" / pipeline
    return sorted(base.iterdir()) if base.exists() else []


def test_full_pipeline_writes_model_and_metrics_then_promote_skips_a_worse_model(
    dag_run, next_date, ours, ml_image, capfd
):
    first = dag_run("dood_it_ml", next_date)
    assert first.state == "success"
    assert {t: task_state(first, t) for t in ("prepare", "train", "evaluate", "promote")} == dict.fromkeys(
        ("prepare", "train", "evaluate", "promote"), "success"
    )
    [work] = [p for p in partitions("it_ml") if first.run_id.split("__")[0] in p.name]
    assert (work / "model" / "model.joblib").stat().st_size > 0
    # The steps ran as the non-root default user: what they wrote is theirs, nothing is world-writable, and
    # the partition itself is a leaf (trusted owner, shared through its group: 2770).
    assert stat.S_IMODE(work.lstat().st_mode) == 0o2770
    written = list(work.rglob("*"))
    assert written and all(p.lstat().st_uid == 50000 for p in written), {str(p): p.lstat().st_uid for p in written}
    assert not [p for p in [work, *written] if p.lstat().st_mode & stat.S_IWOTH]
    metrics = json.loads((work / "metrics" / "eval.json").read_text())
    assert xcom_value(first, "evaluate")["return_value"]["accuracy"] == metrics["accuracy"] >= 0.85
    champion = ROOT / "ml" / "models" / "it_ml" / "champion"
    assert json.loads((champion / "source.json").read_text())["run_id"] == first.run_id

    capfd.readouterr()
    worse = dag_run(
        "dood_it_ml", next_date + timedelta(seconds=1), {"n_estimators": 10, "max_depth": 1, "min_accuracy": 0.5}
    )
    log = capfd.readouterr().out
    assert worse.state == "success"
    assert task_state(worse, "evaluate") == "success"
    assert task_state(worse, "promote") == "skipped"
    assert "exited with code 99" in log
    assert json.loads((champion / "source.json").read_text())["run_id"] == first.run_id  # champion kept


def test_params_reach_the_containers_and_quality_gate_fails_the_run(dag_run, next_date, ours, ml_image, capfd):
    dagrun = dag_run("dood_it_ml", next_date, {"n_estimators": 12, "max_depth": 2, "min_accuracy": 0.999})
    log = capfd.readouterr().out
    assert task_state(dagrun, "train") == "success"
    assert task_state(dagrun, "evaluate") == "failed"
    assert task_state(dagrun, "promote") == "upstream_failed"
    assert "exited with code 97" in log and "0.999" in log  # the no-retry code: a verdict retries cannot change
    assert "ContainerFailedNoRetry" in log
    # The step's own verdict line is at error level in the task log (Airflow's log view highlights it).
    assert [line for line in log.splitlines() if "[evaluate] FAILED: accuracy" in line and "[error" in line], log


def test_a_model_trained_on_older_data_never_replaces_the_champion(dag_run, next_date, ours, ml_image, capfd):
    """What a backfill of past dates would do: its runs' data ends before the champion's (issue 11.4)."""
    # dag.test() keeps an earlier run's conf in-process: every Param this test relies on is given explicitly.
    conf = {"n_estimators": 50, "max_depth": 6, "min_accuracy": 0.5}
    newer = dag_run("dood_it_ml", next_date + timedelta(days=30), {**conf, "force_promote": True})
    assert task_state(newer, "promote") == "success"
    champion = ROOT / "ml" / "models" / "it_ml" / "champion"
    source = json.loads((champion / "source.json").read_text())
    assert source["run_id"] == newer.run_id and source["run_type"] == "manual" and source["data_interval_end"]
    assert source["partition"].startswith(str(ROOT / "ml" / "artifacts"))  # the host path, not /dood/work
    capfd.readouterr()
    older = dag_run("dood_it_ml", next_date, {**conf, "n_estimators": 120, "force_promote": False})
    log = capfd.readouterr().out
    assert task_state(older, "promote") == "skipped"
    assert "before the champion's" in log and "promotion.require_newer_data" in log
    assert json.loads((champion / "source.json").read_text())["run_id"] == newer.run_id
    trained = xcom_value(older, "train")["return_value"]
    assert trained["model_path"].startswith(str(ROOT / "ml" / "artifacts"))  # results name host paths


def test_bad_param_value_is_rejected_before_any_container(dag_run, next_date, ours):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="n_estimators"):
        dag_run("dood_it_ml", next_date, {"n_estimators": 100000})
    assert ours("dood_it_ml") == []


def test_consecutive_dates_get_distinct_partitions(dag_run, next_date, ours):
    before = set(partitions("it_light"))
    for day in range(7):
        dagrun = dag_run("dood_it_light", next_date + timedelta(days=day))
        assert dagrun.state == "success"
    created = sorted(set(partitions("it_light")) - before)
    assert len(created) == 7
    prepared = {(p / "prepared.txt").read_text() for p in created}
    assert len(prepared) == 7  # each run saw its own data interval
    params = json.loads((created[0] / "params.json").read_text())
    assert params["image_tag"] == "latest" and params["force_promote"] is False
