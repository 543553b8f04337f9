"""The repository's maintenance DAG (dags/dood_janitor.py), exposed to the integration tests' Airflow DAG folder."""

from __future__ import annotations

import runpy
from pathlib import Path

dag = runpy.run_path(str(Path(__file__).resolve().parents[3] / "dags" / "dood_janitor.py"))["dag"]
