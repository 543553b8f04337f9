"""The Airflow DAGs of tests/integration/pipelines.yaml, built by the factory that builds dags/dood_pipelines.py."""

from __future__ import annotations

from pathlib import Path

from dood.dag_factory import build_dags

CONFIG = str(Path(__file__).resolve().parents[1] / "pipelines.yaml")
DAGS = build_dags(config_path=CONFIG)
globals().update(DAGS)
