"""The Airflow DAGs of the tracking tests: one pipeline config each, written by the test to
$DOOD_TEST_ROOT/tracking-configs/<name>.yaml before its DAG runs (`dag.test()` parses this folder)."""

from __future__ import annotations

import os
from pathlib import Path

from dood.dag_factory import build_dags

CONFIGS = Path(os.environ.get("DOOD_TEST_ROOT", "/nonexistent")) / "tracking-configs"
for _path in sorted(CONFIGS.glob("*.yaml")):
    globals().update(build_dags(config_path=str(_path)))
