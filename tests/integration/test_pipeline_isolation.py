"""One bad pipeline fails alone: the repository's dags/ folder parsed by Airflow with a config holding a valid
pipeline and one with only a `train` step (the mistake that once emptied the DAG list).

Parsed twice: by a DagBag in this process, and by the Airflow CLI in a fresh AIRFLOW_HOME, whose
`dags reserialize` writes the import errors to the metadata DB as the dag-processor does (and marks every DAG
of a file with an import error stale: the valid DAGs must come from other files than the error).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration.airflow_stack import migrated_database

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
AIRFLOW = str(Path(sys.executable).parent / "airflow")


@pytest.fixture
def config_with_a_bad_pipeline(tmp_path, monkeypatch):
    """The repository's config plus the pipeline `only_train` (no prepare, no evaluate); $DOOD_CONFIG names it."""
    data = yaml.safe_load((REPO / "config" / "dood.yaml").read_text())
    good = data["pipelines"]["breast_cancer"]
    data["pipelines"]["only_train"] = {**good, "steps": {"train": good["steps"]["train"]}}
    path = tmp_path / "dood.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("DOOD_CONFIG", str(path))
    return path


def check_the_error(error: str, config: Path) -> None:
    assert "pipeline 'only_train' (DAG dood_only_train)" in error, error
    assert "pipelines.only_train.steps" in error and "missing steps ['prepare', 'evaluate']" in error, error
    assert str(config) in error and "breast_cancer" not in error, error


def test_the_dagbag_keeps_the_good_pipeline_and_the_janitor(config_with_a_bad_pipeline):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert {"dood_breast_cancer", "dood_janitor"} <= set(bag.dag_ids), bag.dag_ids
    assert "dood_only_train" not in bag.dag_ids
    assert list(bag.import_errors) == [str(DAGS / "dood_pipeline_errors.py")], bag.import_errors
    check_the_error(bag.import_errors[str(DAGS / "dood_pipeline_errors.py")], config_with_a_bad_pipeline)


def test_airflow_lists_the_import_error_of_the_bad_pipeline_only(config_with_a_bad_pipeline, tmp_path):
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}",
    }

    def airflow(*args: str, returncode: int = 0) -> str:
        done = subprocess.run([AIRFLOW, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == returncode, f"airflow {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def json_of(out: str) -> list[dict]:
        lines = [line for line in out.splitlines() if line.startswith(("[{", "[]"))]  # not the warnings before
        assert lines, f"no JSON list in the output:\n{out}"
        return json.loads(lines[-1])

    migrated_database(env, tmp_path / "airflow.db")
    airflow("dags", "reserialize")
    dags = {row["dag_id"]: row for row in json_of(airflow("dags", "list", "-o", "json"))}
    assert {"dood_breast_cancer", "dood_janitor"} <= set(dags), dags
    assert "dood_only_train" not in dags
    errors = json_of(airflow("dags", "list-import-errors", "-o", "json", returncode=1))  # 1: there are errors
    assert [e["filepath"] for e in errors] == ["dood_pipeline_errors.py"], errors
    check_the_error(errors[0]["error"], config_with_a_bad_pipeline)
