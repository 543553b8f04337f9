"""dood.operators.assets: the events that started a run (their dataset_date), and promote's model event: its
extra from promote's result, or the task skipped (no event) when the result does not say it crowned a model."""

from __future__ import annotations

import datetime as dt
import json
import logging
from types import SimpleNamespace

import pytest
from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowSkipException
from airflow.sdk.execution_time.context import OutletEventAccessors

from dood.config.pipelines import AssetRef, Pipeline
from dood.operators.assets import (
    EVENTS_ENV_LIMIT,
    airflow_asset,
    dataset_date_of,
    emit_model_event,
    events_env,
    input_events,
)

MODEL = AssetRef(uri="file:///m/p/champion", name="p_model")
RESULT = {
    "promoted": True,
    "reason": "better accuracy",
    "accuracy": 0.95,
    "metrics": {"accuracy": 0.95, "f1": 0.96},
    "model_path": "/srv/models/p/champion/model.joblib",
    "model_digest": "sha256:" + "a" * 64,
}


def context(**more):
    return {
        "run_id": "manual__1",
        "dag": SimpleNamespace(dag_id="dood_p"),
        "dag_run": SimpleNamespace(run_type=SimpleNamespace(value="manual")),
        "outlet_events": OutletEventAccessors(),
        **more,
    }


def test_a_promotion_gives_the_model_event_its_extra():
    ctx = context()
    emit_model_event(RESULT, ctx, MODEL, "p", "accuracy", logging.getLogger("t"))
    assert ctx["outlet_events"][airflow_asset(MODEL)].extra == {
        "pipeline": "p",
        "dag_id": "dood_p",
        "run_id": "manual__1",
        "run_type": "manual",
        "metrics": {"accuracy": 0.95, "f1": 0.96},
        "model_path": "/srv/models/p/champion/model.joblib",
        "model_digest": "sha256:" + "a" * 64,
        "reason": "better accuracy",
    }


def test_a_result_without_metrics_gives_the_gate_metric_and_the_champion_dir():
    ctx = context()
    emit_model_event({"promoted": True, "accuracy": 0.9, "champion_dir": "/c"}, ctx, MODEL, "p", "accuracy", logging)
    extra = ctx["outlet_events"][airflow_asset(MODEL)].extra
    assert extra["metrics"] == {"accuracy": 0.9} and extra["model_path"] == "/c" and extra["model_digest"] is None


@pytest.mark.parametrize("result", [None, {}, {"promoted": False}, {"promoted": "true"}, [1]])
def test_a_promote_that_crowned_nothing_is_skipped_and_emits_nothing(result):
    ctx = context()
    with pytest.raises(AirflowSkipException, match="promote kept the champion"):
        emit_model_event(result, ctx, MODEL, "p", "accuracy", logging.getLogger("t"))
    assert not ctx["outlet_events"]._dict  # nothing recorded


def event(uri, extra, minute, name=None):
    return SimpleNamespace(
        asset=SimpleNamespace(name=name or uri, uri=uri),
        extra=extra,
        timestamp=dt.datetime(2026, 12, 1, 0, minute, tzinfo=dt.timezone.utc),
        source_dag_id="dood_p_ingest",
        source_run_id=f"r{minute}",
    )


def test_only_the_inputs_events_count_and_the_newest_dataset_date_wins():
    p = Pipeline.model_validate(
        {
            "data_root": "/d",
            "model_root": "/m",
            "artifact_root": "/a",
            "inputs": [{"uri": "file:///d/x", "name": "data"}],
            "steps": {s: {"image": "x", "command": ["c"]} for s in ("prepare", "train", "evaluate")},
        }
    )
    data, other = Asset(uri="file:///d/x", name="data"), Asset(uri="s3://other")
    accessor = {
        data: [event("file:///d/x", {"dataset_date": "2026-11-03"}, 2, "data"), event("file:///d/x", {}, 1, "data")],
        other: [event("s3://other", {"dataset_date": "2030-01-01"}, 3)],
    }
    events = input_events({"triggering_asset_events": accessor}, p)
    assert [e["source_run_id"] for e in events] == ["r1", "r2"]
    assert dataset_date_of(events) == "2026-11-03"
    assert dataset_date_of([{"extra": {"dataset_date": "not a date"}}]) is None
    assert input_events({}, p) == []


def test_the_events_variable_keeps_the_newest_within_its_limit():
    events = [{"extra": {"blob": "x" * 10_000}, "n": n} for n in range(5)]
    kept = json.loads(events_env(events))
    assert len(events_env(events)) <= EVENTS_ENV_LIMIT and [e["n"] for e in kept] == [2, 3, 4]


def test_the_factory_wires_inlets_outlets_and_the_asset_schedule():
    from airflow.sdk import AssetAll, AssetAny
    from airflow.sdk.definitions.timetables.assets import AssetOrTimeSchedule
    from airflow.serialization.serialized_objects import DagSerialization

    from dood.config.model import parse_config
    from dood.dag_factory import build_dags

    steps = {s: {"image": "x", "command": ["c"]} for s in ("prepare", "train", "evaluate", "promote")}
    inputs = [{"uri": "file:///d/eu", "name": "eu"}, {"uri": "file:///d/us", "name": "us"}]
    base = {"data_root": "/d", "model_root": "/m", "artifact_root": "/a", "steps": steps, "inputs": inputs}
    model = {"uri": "file:///m/champion", "name": "model"}
    config = parse_config(
        {
            "pipelines": {
                "one": {**base, "schedule": {"assets": "eu"}, "model_asset": model},
                "all": {**base, "schedule": {"assets": ["eu", "us"]}},
                "timed": {**base, "schedule": {"assets": {"any": ["eu", {"all": ["us", "eu"]}]}, "cron": "@daily"}},
            }
        }
    )
    dags = build_dags(config)
    eu, us = Asset(uri="file:///d/eu", name="eu"), Asset(uri="file:///d/us", name="us")
    one = dags["dood_one"]
    assert one.timetable.asset_condition == eu
    assert one.task_dict["prepare"].inlets == [eu, us] and one.task_dict["promote"].outlets == [Asset(**model)]
    assert one.task_dict["train"].inlets == [] and one.task_dict["train"].outlets == []
    assert dags["dood_all"].timetable.asset_condition == AssetAll(eu, us)
    assert dags["dood_all"].task_dict["promote"].outlets == []
    timed = dags["dood_timed"].timetable
    assert isinstance(timed, AssetOrTimeSchedule) and timed.asset_condition == AssetAny(eu, AssetAll(us, eu))
    for dag in dags.values():  # what the dag-processor does with them
        assert DagSerialization.from_dict(DagSerialization.to_dict(dag)).dag_id == dag.dag_id
    assert DagSerialization.from_dict(DagSerialization.to_dict(dags["dood_timed"])).timetable.periodic
