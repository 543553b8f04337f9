"""The import error of the dood pipelines that are invalid (Airflow lists import errors per DAG file).

One bad pipeline must not hide the others: dood_pipelines.py builds the DAG of every *valid* pipeline, and
this file, which holds no DAG, fails naming each invalid pipeline and its fields (`pipelines.<name>.<field>`),
so the reason shows under Airflow's import errors. It is a file of its own because Airflow marks every DAG
of a file with an import error stale. With every pipeline valid it imports cleanly and defines nothing.
"""

from __future__ import annotations

from dood.dag_factory import raise_for_invalid_pipelines

raise_for_invalid_pipelines()
