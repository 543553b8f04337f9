"""TracksInMlflow pushes the XCom `mlflow` the Airflow UI links from, and only when tracking is configured."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from dood.lifecycle.mlflow_runs import StepRun
from dood.operators import tracking
from dood.operators.tracking import XCOM_KEY, TracksInMlflow

STEP = StepRun("ml", "7", "b" * 32, "a" * 32, "ml", {})


class Base:
    def build_spec(self, config, hook, identity, context):
        return "spec"

    def _adopted(self, config, identity, context):
        pass


class Op(TracksInMlflow, Base):
    environment: dict = {}
    private_environment: dict = {}
    log = logging.getLogger("test")


class Ti:
    def __init__(self):
        self.pushed = []

    def xcom_push(self, key, value):
        self.pushed.append((key, value))


class Runs:
    settings = SimpleNamespace(tracking_uri="http://mlflow:5000", credentials_env=(), register_models=True)

    def start(self, identity, pipeline):
        return STEP


def test_the_step_run_is_pushed_for_the_ui(monkeypatch):
    monkeypatch.setattr(Op, "_mlflow_runs", lambda self, config: Runs())
    monkeypatch.setattr(tracking, "step_environment", lambda step, settings: ({"MLFLOW_RUN_ID": step.run_id}, {}))
    ti = Ti()
    assert Op().build_spec(None, None, None, {"ti": ti}) == "spec"
    assert ti.pushed == [
        (
            XCOM_KEY,
            {"experiment_id": "7", "experiment_name": "ml", "run_id": "a" * 32, "parent_run_id": "b" * 32},
        )
    ]


def test_nothing_is_pushed_without_tracking(monkeypatch):
    monkeypatch.setattr(Op, "_mlflow_runs", lambda self, config: None)
    ti = Ti()
    assert Op().build_spec(None, None, None, {"ti": ti}) == "spec"
    assert ti.pushed == []


def test_an_adopted_container_s_try_pushes_the_same_step_run(monkeypatch):
    """A retry that adopts the running container builds no spec: it finds the step run again and pushes it."""
    monkeypatch.setattr(Op, "_mlflow_runs", lambda self, config: Runs())
    ti = Ti()
    Op()._adopted(None, None, {"ti": ti})
    assert ti.pushed == [
        (
            XCOM_KEY,
            {"experiment_id": "7", "experiment_name": "ml", "run_id": "a" * 32, "parent_run_id": "b" * 32},
        )
    ]


def test_mlflow_out_of_reach_never_fails_an_adopted_try(monkeypatch, caplog):
    class Down(Runs):
        def start(self, identity, pipeline):
            raise ConnectionError("mlflow:5000 refused")

    monkeypatch.setattr(Op, "_mlflow_runs", lambda self, config: Down())
    ti = Ti()
    with caplog.at_level(logging.WARNING, logger="test"):
        Op()._adopted(None, None, {"ti": ti})
    assert ti.pushed == []
    assert "could not be looked up (mlflow:5000 refused): not linked" in caplog.text
