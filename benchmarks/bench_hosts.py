"""Task-start latency, queued -> container started, through Celery vs LocalExecutor (issue 14).

Needs root (it starts a second dockerd of its own, tests/integration/second_engine.py):
`.venv/bin/python benchmarks/bench_hosts.py [--runs 10]`.

The same config, proxies and step (a container that writes its result and exits) started three ways, on
the arrangement of tests/integration/test_hosts_celery.py (celery_stack.two_hosts):

* ``local``    - LocalExecutor (the scheduler's own task processes, DOOD_HOST=host-a), the step pinned to host-a
* ``celery-a`` - CeleryExecutor with Redis, worker a (queue ``default``), the step pinned to host-a
* ``celery-b`` - CeleryExecutor, worker b (queue ``host-b``), the step pinned to host-b (the second engine)

Runs go one at a time (each waits for the previous one to end): the latency of one start, not of a crowd;
the first run of each is a warm-up, not counted. Per run, from Airflow's REST API and the engine (one
machine, one clock): the task instance's ``queued_when`` -> its ``start_date`` (the executor delivered it and
the try began: Celery's broker and worker, or LocalExecutor's process) -> the container's ``State.StartedAt``
(the engine's; the task runner's start, DAG parse and dood's create and start through the proxy).

`--steps N` (default 100; 0: skip) then measures throughput in a Celery stack of its own: one run of N
trivial steps (`true`, a mapped task) all on host-a (worker a alone, 4 processes), then one run with half on
host-a and half on host-b (both workers, 4 processes each; `[core] parallelism` 8); the run's start -> end
(REST), and the containers each engine got (labels).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import docker

from tests.integration.airflow_stack import MAIN_ENGINE_URL
from tests.integration.celery_stack import BENCH_DAGS, two_hosts

RESULTS = Path(__file__).resolve().parent / "results"
DAGS = {"a": "dood_hc_pinned_a", "b": "dood_hc_pinned"}


def _when(text: str) -> float:
    """An ISO time from Airflow (microseconds) or Docker (nanoseconds), as epoch seconds."""
    head, _, rest = text.rstrip("Z").partition(".")
    fraction = rest.split("+")[0].split("-")[0]
    moment = datetime.fromisoformat(head).replace(tzinfo=timezone.utc).timestamp()
    return moment + (float(f"0.{fraction}") if fraction else 0.0)


def _patient(read, *args, seconds: float = 120):
    deadline = time.monotonic() + seconds
    while True:
        try:
            return read(*args)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def one_run(arranged, host: str) -> dict[str, float]:
    stack, dag_id = arranged.stack, DAGS[host]
    run_id = _patient(stack.trigger, dag_id)
    deadline = time.monotonic() + 300
    while _patient(stack.run_state, dag_id, run_id) not in ("success", "failed"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{dag_id} {run_id} did not end")
        time.sleep(0.5)
    ti = _patient(stack.task, dag_id, run_id)
    if ti["state"] != "success":
        raise RuntimeError(f"{dag_id} {run_id}: {ti['state']}")
    api = docker.APIClient(base_url=MAIN_ENGINE_URL) if host == "a" else arranged.engine_b.api()
    (container,) = api.containers(all=True, filters={"label": [f"dood.dag_id={dag_id}", f"dood.run_id={run_id}"]})
    started = _when(api.inspect_container(container["Id"])["State"]["StartedAt"])
    queued, began = _when(ti["queued_when"]), _when(ti["start_date"])
    return {"queued_to_started": started - queued, "queued_to_try": began - queued, "try_to_started": started - began}


def measure(arranged, host: str, runs: int) -> list[dict[str, float]]:
    one_run(arranged, host)  # warm-up: first parse, first imports, the image's first use on the engine
    return [one_run(arranged, host) for _ in range(runs)]


def throughput(arranged, dag_id: str) -> dict[str, float | int]:
    """One run of the DAG's trivial steps: its duration, and where its containers ran."""
    stack = arranged.stack
    run_id = _patient(stack.trigger, dag_id)
    deadline = time.monotonic() + 1800
    while _patient(stack.run_state, dag_id, run_id) not in ("success", "failed"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{dag_id} {run_id} did not end")
        time.sleep(2)
    run = _patient(stack.api, "GET", f"/dags/{dag_id}/dagRuns/{run_id}")
    if run["state"] != "success":
        kept = Path(tempfile.mkdtemp(prefix="bench-hosts-failed-"))
        for name in ("logs", "scheduler.log", "worker-a.log", "worker-b.log", "api-server.log"):
            source = stack.home / name
            if source.is_dir():
                shutil.copytree(source, kept / name)
            elif source.exists():
                shutil.copy(source, kept / name)
        raise RuntimeError(f"{dag_id} {run_id}: {run['state']} (logs kept in {kept})")
    labels = {"label": [f"dood.dag_id={dag_id}", f"dood.run_id={run_id}"]}
    engines = {"a": docker.APIClient(base_url=MAIN_ENGINE_URL), "b": arranged.engine_b.api()}
    seconds = _when(run["end_date"]) - _when(run["start_date"])
    found = {f"containers_{h}": len(api.containers(all=True, filters=labels)) for h, api in engines.items()}
    return {"seconds": seconds, **found, "load_end": os.getloadavg()[0]}


def summary(samples: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    found = {}
    for key in samples[0]:
        values = sorted(sample[key] for sample in samples)
        found[key] = {
            "median": statistics.median(values),
            "p95": values[min(len(values) - 1, round(0.95 * (len(values) - 1)))],
            "min": values[0],
            "max": values[-1],
        }
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="measured runs per variant after a warm-up (0: none)")
    parser.add_argument("--steps", type=int, default=100, help="steps of the throughput runs (0: skip them)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_hosts.py starts a second dockerd: run it as root")
    results: dict[str, list[dict[str, float]]] = {}
    load = {"start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-hosts-") as work:
        for home in ("local", "celery"):
            (Path(work) / home).mkdir()
        if args.runs:
            with two_hosts(Path(work) / "local", "LocalExecutor") as arranged:
                results["local"] = measure(arranged, "a", args.runs)
            with two_hosts(Path(work) / "celery", "CeleryExecutor") as arranged:
                results["celery-a"] = measure(arranged, "a", args.runs)
                results["celery-b"] = measure(arranged, "b", args.runs)
        steps = {}
        if args.steps:
            (Path(work) / "steps").mkdir()
            with two_hosts(
                Path(work) / "steps", dag_files=(BENCH_DAGS,), DOOD_HC_BENCH_STEPS=str(args.steps)
            ) as arranged:
                for name in ("one_host", "two_hosts"):
                    steps[name] = throughput(arranged, f"dood_hc_steps_{name}")
    load["end"] = os.getloadavg()
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg": load},
        "docker": docker.APIClient(base_url=MAIN_ENGINE_URL).version()["Version"],
        "runs": args.runs,
        "summary": {name: summary(samples) for name, samples in results.items()},
        "samples": results,
        "steps": {"count": args.steps, **steps},
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bench_hosts-{report['date'].replace(':', '')}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"{'variant':10} {'queued->started median / p95':>30} {'queued->try':>18} {'try->started':>18}  (s)")
    for name, parts in report["summary"].items():
        total, delivery, start = parts["queued_to_started"], parts["queued_to_try"], parts["try_to_started"]
        print(
            f"{name:10} {total['median']:>16.2f} / {total['p95']:<11.2f} {delivery['median']:>8.2f} / "
            f"{delivery['p95']:<7.2f} {start['median']:>8.2f} / {start['p95']:<7.2f}"
        )
    for name, found in steps.items():
        print(f"{args.steps} steps, {name}: {found}")
    print(f"load average {load['start']} -> {load['end']}; written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
