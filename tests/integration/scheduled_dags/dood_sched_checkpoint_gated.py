"""DAGs run by a real scheduler in tests/integration/test_checkpoints.py whose containers wait on a gate the test
opens (a file in the stack's marks directory, bind-mounted at /marks), so the test acts while they are held,
never after a fixed sleep: a training whose worker is SIGKILLed while it waits after epoch k, and a backfill
of 3 dates whose 3 trainings are all held at once while the test counts their checkpoint directories."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta

from airflow.sdk import DAG

from dood import DoodContainerOperator

ROOT = os.environ.get("DOOD_STACK_ROOT", "/tmp/dood-stack")
CHECKPOINTS = f"{ROOT}/dood-checkpoints"
MARKS = f"{ROOT}/marks"
ML_IMAGE = "dood-ml-example:latest"
BUSYBOX = "dood-test-busybox:latest"
EPOCHS = 5
GATE_AFTER_EPOCH = 2
WORKER_GATE = "/marks/checkpoint-worker.go"
BACKFILL_GATE = "/marks/checkpoint-backfill.go"
PARAMS = {"dataset_date": "2026-11-01", "epochs": EPOCHS, "n_estimators": 20, "max_depth": 2}

# The example train (images/ml-example/app/train.py), unchanged, with its pause after each epoch made a gate:
# after epoch GATE_AFTER_EPOCH (its checkpoint saved, its line logged) it waits until the gate file exists
# (at most 180 s), and does not pause after the others.
GATED_TRAIN = """
import os, runpy, sys, time
sys.path.insert(0, "/opt/app")
sys.argv = ["/opt/app/train.py"]
gate, after, real_sleep, epoch = os.environ["GATE"], int(os.environ["GATE_AFTER_EPOCH"]), time.sleep, [0]
def sleep(seconds):
    epoch[0] += 1
    if epoch[0] == after:
        print(f"held after epoch {after} until {gate} exists", flush=True)
        deadline = time.monotonic() + 180
        while not os.path.exists(gate) and time.monotonic() < deadline:
            real_sleep(0.1)
time.sleep = sleep
runpy.run_path("/opt/app/train.py", run_name="__main__")
"""

with DAG(
    "dood_sched_checkpoint_worker",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["dood-integration-test"],
):
    DoodContainerOperator(
        task_id="run",
        image=ML_IMAGE,
        command=["sh", "-c", 'python /opt/app/prepare.py >/dev/null && exec python -c "$GATED_TRAIN"'],
        environment={
            "DOOD_WORK_DIR": "/tmp/work",  # the container's own
            "DOOD_PARAMS": json.dumps(PARAMS),
            "DOOD_EPOCH_SECONDS": "0.01",  # train.py calls sleep() after each epoch: the gate above
            "GATED_TRAIN": GATED_TRAIN,
            "GATE": WORKER_GATE,
            "GATE_AFTER_EPOCH": str(GATE_AFTER_EPOCH),
        },
        mounts=[f"{MARKS}:/marks"],
        checkpoint=True,
        checkpoint_root=CHECKPOINTS,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )

# Each backfilled date: its mark in its checkpoint directory, then held until the test opens the gate.
HELD = (
    'echo "$DOOD_RUN_ID" > "$DOOD_CHECKPOINT_DIR/mine"; echo "held: $DOOD_RUN_ID"; '
    f"while [ ! -e {BACKFILL_GATE} ]; do sleep 0.2; done; "
    'printf \'{"run": "%s"}\' "$DOOD_RUN_ID" > "$DOOD_RESULT_FILE"'
)

with DAG(
    "dood_sched_checkpoint_backfill",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=4,  # the 3 backfilled dates and the scheduled run, all held at once
    tags=["dood-integration-test"],
):
    DoodContainerOperator(
        task_id="run",
        image=BUSYBOX,
        command=["sh", "-c", HELD],
        mounts=[f"{MARKS}:/marks"],
        checkpoint=True,
        checkpoint_root=CHECKPOINTS,
    )
