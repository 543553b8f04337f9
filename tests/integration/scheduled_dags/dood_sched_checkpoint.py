"""DAGs run by a real scheduler in tests/integration/test_checkpoints.py: a training that resumes from its
checkpoint directory after its container is SIGKILLed, mapped indexes each with their own directory, and a
clear that starts from an empty one."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta

from airflow.sdk import DAG

from dood import DoodContainerOperator

ROOT = os.environ.get("DOOD_STACK_ROOT", "/tmp/dood-stack")
CHECKPOINTS = f"{ROOT}/dood-checkpoints"
ML_IMAGE = "dood-ml-example:latest"
BUSYBOX = "dood-test-busybox:latest"
EPOCHS = 6
EPOCH_SECONDS = 2  # after each epoch: time for the test to kill the container between two epochs
#: The same data (dataset_date) for every run, so two runs train the same model.
PARAMS = {"dataset_date": "2026-11-01", "epochs": EPOCHS, "n_estimators": 60, "max_depth": 3}
TRAIN = "python /opt/app/prepare.py >/dev/null && exec python /opt/app/train.py"

with DAG(
    "dood_sched_checkpoint_training",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=4,
    tags=["dood-integration-test"],
):
    DoodContainerOperator(
        task_id="run",
        image=ML_IMAGE,
        command=["sh", "-c", TRAIN],
        environment={
            "DOOD_WORK_DIR": "/tmp/work",  # the container's own: prepare runs again in every try
            "DOOD_PARAMS": json.dumps(PARAMS),
            "DOOD_EPOCH_SECONDS": str(EPOCH_SECONDS),
        },
        checkpoint=True,
        checkpoint_root=CHECKPOINTS,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )

# Each index: how many entries its checkpoint held at start, then its own mark in it.
MAPPED = (
    'seen=$(ls -A "$DOOD_CHECKPOINT_DIR" | wc -l); echo "index-$DOOD_MAP_INDEX" > "$DOOD_CHECKPOINT_DIR/mine"; '
    'printf \'{"index": %s, "seen": %s}\' "$DOOD_MAP_INDEX" "$seen" > "$DOOD_RESULT_FILE"'
)

with DAG(
    "dood_sched_checkpoint_mapped",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["dood-integration-test"],
):
    DoodContainerOperator.partial(
        task_id="run",
        image=BUSYBOX,
        checkpoint=True,
        checkpoint_root=CHECKPOINTS,
        checkpoint_retention=5,  # kept after success, for the test to look into
    ).expand(command=[["sh", "-c", MAPPED], ["sh", "-c", MAPPED]])

# Try 1 leaves progress in its checkpoint and waits to be cleared; the try after the clear reports what it found.
CLEARED = (
    'found=$(ls -A "$DOOD_CHECKPOINT_DIR" | wc -l); echo "try-$DOOD_TRY_NUMBER" > "$DOOD_CHECKPOINT_DIR/progress"; '
    'echo "started try $DOOD_TRY_NUMBER, found $found"; '
    'if [ "$DOOD_TRY_NUMBER" = 1 ]; then sleep 60; fi; '
    'printf \'{"try": %s, "found": %s}\' "$DOOD_TRY_NUMBER" "$found" > "$DOOD_RESULT_FILE"'
)

with DAG(
    "dood_sched_checkpoint_clear",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["dood-integration-test"],
):
    DoodContainerOperator(
        task_id="run",
        image=BUSYBOX,
        command=["sh", "-c", CLEARED],
        checkpoint=True,
        checkpoint_root=CHECKPOINTS,
        checkpoint_retention=5,
        stop_grace_period=2,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )
