"""Test-wide setup: an isolated Airflow home and dood config, set before anything imports Airflow."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_home = Path(tempfile.mkdtemp(prefix="dood-test-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_home)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "tests" / "integration" / "dags")
os.environ["DOOD_TEST_ROOT"] = str(_home)
_config = _home / "dood.yaml"
_config.write_text(f"runs_root: {_home / 'runs'}\npolicy:\n  allowed_host_roots: ['{_home}']\n")
os.environ["DOOD_CONFIG"] = str(_config)
