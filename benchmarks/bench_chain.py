"""Per container in a chain through `dag.test()` (issue 12): DoodContainerOperator vs the provider's DockerOperator.

A DAG of 20 sequential tasks, each ``echo hi`` on the test image, run by ``dag.test()``: once with
``DoodContainerOperator`` (blocking, the benchmarks' DOOD_CONFIG from ``_common.write_dood_config``), once with
``DockerOperator`` (``auto_remove="force"``, ``mount_tmp_dir=False``, the unix socket; ``_common.make_docker``).

Every repetition of every variant is a fresh ``python`` process (``--worker``), so both pay the same imports
and start with empty per-process caches; the variants are interleaved and their order rotates each repetition,
so load from other work hits both alike. The worker times the ``dag.test()`` call itself; per container =
that time / 20. It also counts the Docker API requests made inside ``dag.test()`` (``requests.Session.send``,
which every docker ``APIClient`` request goes through), per endpoint, so a difference is explained by calls,
the Task SDK's calls to Airflow (``httpx``; ``dag.test()`` serves them in-process) and the time each operator's
``execute()`` takes (its own part of the task).

    .venv/bin/python benchmarks/bench_chain.py --repeat 5 --out benchmarks/results/chain.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common as common  # noqa: E402

VARIANTS = ("dood", "docker")
COMMAND = ["echo", "hi"]
DAG_PREFIX = "bench_chain"  # container labels dood.dag_id start with it (the integration tests' `ours` spares it)
_ID = re.compile(r"^[0-9a-f]{12,64}$")


# --- worker: one variant, one dag.test(), in this process ---


def endpoint(method: str, url: str) -> str:
    """`GET /containers/{id}/json` from a request to the engine: API version, query and names/ids dropped."""
    path = url.split("?", 1)[0]
    path = re.sub(r"^[a-z+]+://[^/]*", "", path)  # scheme and host (http+docker://localhost)
    path = re.sub(r"^/v\d+\.\d+", "", path)
    parts = path.split("/")
    for i in range(1, len(parts) - 1):
        if parts[i] in ("containers", "images", "exec") and parts[i + 1] not in ("json", "create"):
            parts[i + 1] = "{id}" if parts[i] != "images" else "{name}"
            break
    return f"{method} {'/'.join(parts)}"


def count_requests() -> tuple[Counter, Counter]:
    """Count every HTTP request of every requests session (the docker SDK's APIClient is one) per endpoint, and
    the time until its response's headers (a stream's body is read later, outside this)."""
    import requests

    counts: Counter = Counter()
    seconds: Counter = Counter()
    original = requests.Session.send

    def send(self, request, **kwargs):
        key = endpoint(request.method, request.url)
        counts[key] += 1
        start = time.perf_counter()
        try:
            return original(self, request, **kwargs)
        finally:
            seconds[key] += time.perf_counter() - start

    requests.Session.send = send
    return counts, seconds


_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def airflow_endpoint(method: str, url: str) -> str:
    """`PATCH /execution/task-instances/{id}/state` from a Task SDK call (dag.test() serves them in-process)."""
    path = re.sub(r"^[a-z]+://[^/]*", "", str(url).split("?", 1)[0])
    parts = ["{id}" if _UUID.match(part) else part for part in path.split("/")]
    if "xcoms" in parts and len(parts) > parts.index("xcoms") + 4:  # dag, run, task: the key is what tells
        at = parts.index("xcoms") + 1
        parts = parts[:at] + ["{dag}", "{run}", "{task}"] + parts[at + 3 :]
    return f"{method} {'/'.join(parts)}"


def count_airflow_calls() -> tuple[Counter, Counter]:
    """Count the Task SDK's calls to Airflow's Execution API (httpx), per endpoint, and their time."""
    import httpx

    counts: Counter = Counter()
    seconds: Counter = Counter()
    original = httpx.Client.send

    def send(self, request, **kwargs):
        key = airflow_endpoint(request.method, request.url)
        counts[key] += 1
        start = time.perf_counter()
        try:
            return original(self, request, **kwargs)
        finally:
            seconds[key] += time.perf_counter() - start

    httpx.Client.send = send
    return counts, seconds


def time_execute(operator_class) -> list[float]:
    """The time each `execute()` of `operator_class` takes (the operator's own work), in seconds."""
    spent: list[float] = []
    original = operator_class.execute

    def execute(self, context):
        start = time.perf_counter()
        try:
            return original(self, context)
        finally:
            spent.append(time.perf_counter() - start)

    operator_class.execute = execute
    return spent


def build_dag(variant: str, tasks: int):
    from airflow.sdk import DAG

    with DAG(dag_id=f"{DAG_PREFIX}_{variant}", schedule=None, catchup=False, max_active_runs=1) as dag:
        previous = None
        for number in range(tasks):
            task_id = f"step_{number:02d}"
            task = common.make_dood(COMMAND, task_id) if variant == "dood" else common.make_docker(COMMAND, task_id)
            if previous is not None:
                previous >> task
            previous = task
    return dag


def worker(variant: str, tasks: int, when: str, out: Path) -> int:
    """One dag.test() of the variant's chain; writes the elapsed time, task states and request counts to `out`."""
    import docker  # noqa: F401  (imported before the clock starts, as a task process has its operator imported)
    from airflow.models.dagrun import DagRun
    from airflow.providers.docker.operators.docker import DockerOperator
    from airflow.utils.session import create_session

    from dood.operators.container import DoodContainerOperator

    sys.path.insert(0, os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    import bench_chain_dags  # the DAG file dag.test() finds in the dags folder (it serializes the DAGs there)

    dag = bench_chain_dags.DAGS[variant]
    logical_date = datetime.fromisoformat(when)
    import dood

    counts, seconds = count_requests()
    airflow_calls, airflow_seconds = count_airflow_calls()
    executes = time_execute(DoodContainerOperator if variant == "dood" else DockerOperator)
    start = time.perf_counter()
    dagrun = dag.test(logical_date=logical_date, run_after=logical_date)
    elapsed = time.perf_counter() - start
    with create_session() as session:
        dagrun = session.get(DagRun, dagrun.id)
        tis = sorted(dagrun.get_task_instances(session=session), key=lambda ti: ti.task_id)
        states = Counter(str(ti.state) for ti in tis)
        durations = [ti.duration for ti in tis if ti.duration is not None]
        ends = [ti.end_date for ti in tis if ti.end_date is not None]
        # the chain after its first task: free of dag.test()'s one-time start (DAG sync, in-process API server)
        after_first = (ends[-1] - ends[0]).total_seconds() / (len(ends) - 1) if len(ends) > 1 else None
    result = {
        "variant": variant,
        "elapsed_s": elapsed,
        "tasks": tasks,
        "states": dict(states),
        "dagrun_state": str(dagrun.state),
        "task_duration_median_s": statistics.median(durations) if durations else None,
        "per_task_after_first_s": after_first,
        "requests": dict(counts),
        "request_seconds": dict(seconds),
        "airflow_calls": dict(airflow_calls),
        "airflow_call_seconds": dict(airflow_seconds),
        "execute_s": executes,
        "dood_module": dood.__file__,
    }
    out.write_text(json.dumps(result), encoding="utf-8")
    return 0


# --- parent: the Airflow home, the repetitions, the summary ---


_DAG_FILE = """\
# The chain DAGs (airflow DAG objects) of benchmarks/bench_chain.py, written by it: dag.test() finds and
# serializes them here (a DAG file must name both words to be parsed).
import sys

sys.path.insert(0, {here!r})
import bench_chain

DAGS = {{variant: bench_chain.build_dag(variant, {tasks}) for variant in bench_chain.VARIANTS}}
"""


def init_home(work: Path, tasks: int) -> dict[str, str]:
    """Environment of every worker: an Airflow home of its own (SQLite, migrated once) and the dood config."""
    home = work / "airflow"
    home.mkdir()
    dags = work / "dags"
    dags.mkdir()
    (dags / "bench_chain_dags.py").write_text(_DAG_FILE.format(here=str(HERE), tasks=tasks), encoding="utf-8")
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "DOOD_CONFIG": str(common.write_dood_config(work)),
        }
    )
    subprocess.run(
        [sys.executable, "-c", "from airflow.utils import db; db.initdb()"],
        env=env,
        check=True,
        capture_output=True,
    )
    return env


def run_worker(variant: str, tasks: int, when: datetime, work: Path, env: dict[str, str], tag: str) -> dict:
    out = work / f"{tag}-{variant}.json"
    log = work / f"{tag}-{variant}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", variant, str(tasks), when.isoformat(), str(out)]
    with open(log, "wb") as sink:
        proc = subprocess.run(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT)
    if proc.returncode != 0 or not out.exists():
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"{variant} worker failed (exit {proc.returncode}); log {log}:\n{tail}")
    result = json.loads(out.read_text(encoding="utf-8"))
    if result["dagrun_state"] != "success" or result["states"] != {"success": tasks}:
        raise RuntimeError(f"{variant}: not every task succeeded: {result['states']} (log {log})")
    return result


def cleanup() -> None:
    """Remove any container of this benchmark's DAGs that is left (an interrupted run's)."""
    import docker

    api = docker.APIClient(base_url=common.DOCKER_URL)
    try:
        for container in api.containers(all=True, filters={"label": "dood.managed=true"}):
            if container["Labels"].get("dood.dag_id", "").startswith(DAG_PREFIX):
                api.remove_container(container["Id"], force=True)
    finally:
        api.close()


def summarize(variants: list[str], runs: dict[str, list[dict]], tasks: int) -> list[dict]:
    rows = []
    base = statistics.median(r["elapsed_s"] for r in runs["docker"]) if "docker" in runs else None
    for variant in variants:
        elapsed = [r["elapsed_s"] for r in runs[variant]]
        med = statistics.median(elapsed)
        requests, seconds, airflow_calls, airflow_seconds = Counter(), Counter(), Counter(), Counter()
        for r in runs[variant]:
            requests.update(r["requests"])
            seconds.update(r["request_seconds"])
            airflow_calls.update(r.get("airflow_calls", {}))
            airflow_seconds.update(r.get("airflow_call_seconds", {}))
        launches = len(runs[variant]) * tasks
        per_launch = {k: v / launches for k, v in sorted(requests.items())}
        executes = [s for r in runs[variant] for s in r.get("execute_s", [])]
        rows.append(
            {
                "variant": variant,
                "repetitions": len(elapsed),
                "median_total_s": med,
                "median_per_container_s": med / tasks,
                "totals_s": elapsed,
                "task_duration_median_s": statistics.median(r["task_duration_median_s"] for r in runs[variant]),
                "median_per_task_after_first_s": statistics.median(r["per_task_after_first_s"] for r in runs[variant]),
                "request_ms_per_launch": {k: v * 1000 / launches for k, v in sorted(seconds.items())},
                "airflow_calls_per_launch": {k: v / launches for k, v in sorted(airflow_calls.items())},
                "airflow_call_ms_per_launch": {k: v * 1000 / launches for k, v in sorted(airflow_seconds.items())},
                "median_execute_s": statistics.median(executes) if executes else None,
                "ratio_to_docker": med / base if base else None,
                "requests_per_launch": per_launch,
                "requests_per_launch_total": sum(per_launch.values()),
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="dag.test() runs per variant (default 5)")
    parser.add_argument("--tasks", type=int, default=20, help="tasks in the chain (default 20)")
    parser.add_argument(
        "--warmup", type=int, default=1, help="unmeasured repetitions first (the fresh DB's first DAG sync; default 1)"
    )
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (the workers' logs)")
    parser.add_argument("--worker", nargs=4, metavar=("VARIANT", "TASKS", "WHEN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        variant, tasks, when, out = args.worker
        return worker(variant, int(tasks), when, Path(out))

    variants = args.variants.split(",")
    work = common.workdir("dood-bench-chain-")
    env = init_home(work, args.tasks)
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    code_before = common.code_state()
    load_before = os.getloadavg()
    started_utc = time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime())
    base_date = datetime.now(timezone.utc).replace(microsecond=0)
    try:
        for rep in range(-args.warmup, args.repeat):
            shift = rep % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                when = base_date + timedelta(minutes=rep + args.warmup)
                result = run_worker(variant, args.tasks, when, work, env, f"r{rep}")
                if rep >= 0:
                    runs[variant].append(result)
                print(
                    f"{'rep' if rep >= 0 else 'warm-up'} {rep} {variant:6s} {result['elapsed_s']:6.2f} s  "
                    f"{result['elapsed_s'] / args.tasks * 1000:6.1f} ms per container  load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
    finally:
        cleanup()
    load_after = os.getloadavg()
    rows = summarize(variants, runs, args.tasks)
    for row in rows:
        ratio = f"{row['ratio_to_docker']:.3f}x" if row["ratio_to_docker"] else "-"
        print(
            f"{row['variant']:6s} median {row['median_total_s']:6.2f} s = "
            f"{row['median_per_container_s'] * 1000:6.1f} ms per container  ratio {ratio}  "
            f"Docker API requests per launch {row['requests_per_launch_total']:.2f}"
        )
        print(
            f"         task duration median {row['task_duration_median_s'] * 1000:.1f} ms, chain after its first task "
            f"{row['median_per_task_after_first_s'] * 1000:.1f} ms per task"
        )
        if row["median_execute_s"] is not None:
            print(f"         execute() median {row['median_execute_s'] * 1000:.1f} ms (the operator's own part)")
        for key, value in row["requests_per_launch"].items():
            print(f"         {value:5.2f}  {key}  ({row['request_ms_per_launch'][key]:.1f} ms per launch)")
        print("         Airflow Execution API calls per launch:")
        for key, value in row["airflow_calls_per_launch"].items():
            print(f"         {value:5.2f}  {key}  ({row['airflow_call_ms_per_launch'][key]:.1f} ms per launch)")
    print(f"load average before {load_before} after {load_after}")
    result = {
        "benchmark": "chain",
        "command": COMMAND,
        "image": common.IMAGE,
        "tasks": args.tasks,
        "repetitions": args.repeat,
        "warmup": args.warmup,
        "dood_module": runs[variants[0]][0]["dood_module"] if runs[variants[0]] else None,
        "code": common.code_span(code_before),
        "started_utc": started_utc,
        "finished_utc": time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime()),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "rows": rows,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    if args.keep:
        print(f"work directory (workers' logs): {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
