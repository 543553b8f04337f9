"""Airflow DAGs generated from the shared dood config (`pipelines:` in config/dood.yaml or $DOOD_CONFIG).

(Airflow's safe-mode parser only opens files that mention both "airflow" and "dag": this one does.)
"""

from __future__ import annotations

from dood.dag_factory import build_dags

globals().update(build_dags())
