"""An Airflow DAG file (the dag-processor's safe mode looks for both words): a pipeline that a real scheduler
backfills in test_backfill_bound.py; busybox steps, train lasts a few seconds, at most 2 trainings at once."""

from __future__ import annotations

import os

from dood.config.pipelines import Pipeline
from dood.dag_factory import build_dag

ROOT = os.environ.get("DOOD_STACK_ROOT", "/tmp/dood-stack")
STEP = {"image": "dood-test-busybox", "command": ["sh", "-c", "echo step"]}

dood_sched_bound = build_dag(
    "sched_bound",
    Pipeline.model_validate(
        {
            "schedule": "@daily",
            "start_date": "2026-01-01",
            "max_active_runs": 2,
            "retries": 0,
            "data_root": f"{ROOT}/bound/data",
            "model_root": f"{ROOT}/bound/models",
            "artifact_root": f"{ROOT}/bound/artifacts",
            "steps": {
                "prepare": STEP,
                "train": {**STEP, "command": ["sh", "-c", "echo training; sleep 5; echo trained"]},
                "evaluate": STEP,
            },
        }
    ),
)
