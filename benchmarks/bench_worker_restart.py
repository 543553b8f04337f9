"""A worker killed mid-training and started again: how soon is the same container followed again (issue 25)?

Needs root (it starts a second dockerd of its own, tests/integration/second_engine.py):
`.venv/bin/python benchmarks/bench_worker_restart.py [--runs 2] [--down 55]`.

On the arrangement of tests/integration/test_hosts_celery.py (celery_stack.two_hosts: CeleryExecutor, Redis,
worker a on host-a, worker b on host-b), with the compose stacks' settings rather than the test's short ones:
`[scheduler] task_instance_heartbeat_timeout` 60 s (docker-compose.yml, AIRFLOW_TASK_HEARTBEAT_TIMEOUT),
Airflow's default detection interval (10 s) and scheduler heartbeat (5 s). The pipeline `dood_hc_restart`
(celery_dags/dood_hc_dags.py) has the pipeline config's defaults: retries 1, retry_delay_seconds 15; its
train step runs on host-b for --train seconds.

Per run: trigger; once train's container runs on B (and --into seconds more), SIGKILL worker b with its task
supervisor and runner (celery_stack.CeleryWorker.kill); start it again --down seconds later; then, from the
kill on: try 1 failed (its end_date, REST), try 2 queued and started (REST), and try 2's log saying
"Reattaching to container" (REST, polled every 0.5 s): the same container followed again. Creates are
counted from engine B's own events (the train step's, this run's).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import docker
import requests

from tests.integration.airflow_stack import MAIN_ENGINE_URL, EngineEvents
from tests.integration.celery_stack import two_hosts

RESULTS = Path(__file__).resolve().parent / "results"
DAG_ID = "dood_hc_restart"
COMPOSE = {  # what the compose stacks run with (docker-compose.yml, docker-compose.host.yml)
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "10",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "5",
}


def _when(text: str | None) -> float | None:
    """An ISO time from Airflow, as epoch seconds."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _patient(read, *args, seconds: float = 120):
    deadline = time.monotonic() + seconds
    while True:
        try:
            return read(*args)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _until(condition, seconds: float, what: str, every: float = 0.5) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {seconds:g} s waiting for {what}")
        time.sleep(every)


def one_run(arranged, events: EngineEvents, into: float, down: float) -> dict[str, float]:
    stack, worker = arranged.stack, arranged.workers["b"]
    run_id = _patient(stack.trigger, DAG_ID)
    engine_b = arranged.engine_b.api()
    labels = [f"dood.dag_id={DAG_ID}", f"dood.run_id={run_id}", "dood.task_id=train"]

    def training() -> bool:
        return any(c["State"] == "running" for c in engine_b.containers(filters={"label": labels}))

    _until(training, 300, "train's container running on host-b")
    time.sleep(into)
    killed = time.time()
    worker.kill()
    time.sleep(max(0.0, killed + down - time.time()))
    restarted = time.time()
    worker.start()

    def log_of_try_2() -> str:
        try:
            return stack.task_log(DAG_ID, run_id, 2, "train")
        except (requests.RequestException, AssertionError):  # no try 2 yet, or the api-server is busy
            return ""

    _until(lambda: "Reattaching to container" in log_of_try_2(), 600, "train's try 2 to reattach")
    followed = time.time()
    _until(lambda: _patient(stack.run_state, DAG_ID, run_id) in ("success", "failed"), 900, f"{run_id} to end", 2)
    state = _patient(stack.run_state, DAG_ID, run_id)
    tries = _patient(stack.api, "GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/train/tries")
    by_try = {t["try_number"]: t for t in tries["task_instances"]}
    creates = [
        e
        for e in events.of("create")
        if e["Actor"]["Attributes"].get("dood.run_id") == run_id
        and e["Actor"]["Attributes"].get("dood.task_id") == "train"
    ]
    on_b = engine_b.containers(all=True, filters={"label": labels})

    def since_kill(moment: float | None) -> float | None:
        return None if moment is None else round(moment - killed, 2)

    return {
        "run_state": state,
        "worker_down_s": round(restarted - killed, 2),
        "try_1_failed_s": since_kill(_when(by_try[1]["end_date"])),
        "try_2_queued_s": since_kill(_when(by_try[2].get("queued_when"))),
        "try_2_started_s": since_kill(_when(by_try[2]["start_date"])),
        "followed_again_s": round(followed - killed, 2),
        "train_creates_on_b": len(creates),
        "train_containers_on_b": len(on_b),
        "same_container": len({c["Id"] for c in on_b}) == 1,
        "load": os.getloadavg()[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2, help="runs, one after the other")
    parser.add_argument("--down", type=float, default=55, help="seconds worker b stays down (the goal: < 60)")
    parser.add_argument("--into", type=float, default=5, help="seconds of training before the kill")
    parser.add_argument("--train", type=int, default=180, help="seconds the training runs")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_worker_restart.py starts a second dockerd: run it as root")
    samples = []
    load = {"start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-restart-") as work:
        with two_hosts(Path(work), DOOD_HC_TRAIN_SECONDS=str(args.train), **COMPOSE) as arranged:
            events = EngineEvents(arranged.engine_b.url, dag_id=DAG_ID)
            try:
                for _ in range(args.runs):
                    samples.append(one_run(arranged, events, args.into, args.down))
                    print(json.dumps(samples[-1]), flush=True)
            finally:
                events.stop()
    load["end"] = os.getloadavg()
    followed = [s["followed_again_s"] for s in samples]
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg": load},
        "docker": docker.APIClient(base_url=MAIN_ENGINE_URL).version()["Version"],
        "settings": {**COMPOSE, "retries": 1, "retry_delay_seconds": 15, **vars(args)},
        "followed_again_s": {"median": statistics.median(followed), "max": max(followed)},
        "samples": samples,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bench_worker_restart-{report['date'].replace(':', '')}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"followed again after the kill: median {statistics.median(followed):.1f} s, max {max(followed):.1f} s")
    print(f"creates of train on B per run: {[s['train_creates_on_b'] for s in samples]}; written to {out}")
    goal = all(s["followed_again_s"] < 120 and s["train_creates_on_b"] == 1 for s in samples)
    return 0 if goal and all(s["run_state"] == "success" for s in samples) else 1


if __name__ == "__main__":
    sys.exit(main())
