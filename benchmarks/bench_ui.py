"""The DooD page with 200 dood containers: how long one request takes, end to end.

    .venv/bin/python benchmarks/bench_ui.py [--containers 200] [--requests 20] [--via-proxy] [--running]
                                            [--append docs/benchmarks.md]

Creates N containers with `docker create` (never started; with `--running`, started running `sleep`, so
each row costs an inspect and a stats sample too) from the test image, labelled as dood's
(`dood.managed=true`, `dood.stack=dood` and task identity labels), then asks the plugin's FastAPI app for
`/dood/containers` N times through Starlette's TestClient (routing, dependencies, the engine calls and
the Jinja rendering: everything but the socket to the browser). Airflow's login is stubbed (a user who
may read every DAG); the engine is real — directly, or through `dood-proxy --read-only` with
`--via-proxy`. The first request (cold caches) and the median of the others are reported. Goal: < 1 s.
The containers are removed afterwards.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import docker

IMAGE = os.environ.get("DOOD_BENCH_IMAGE", "dood-test-busybox:latest")


def create_containers(api, count: int, tag: str, running: bool = False) -> list[str]:
    ids = []
    for i in range(count):
        labels = {
            "dood.managed": "true",
            "dood.stack": "dood",
            "dood.dag_id": f"bench_ui_dag_{i % 10}",
            "dood.run_id": f"manual__2026-01-01T00:00:{i % 60:02d}+00:00",
            "dood.task_id": f"task_{i}",
            "dood.map_index": "-1",
            "dood.try_number": "1",
            "bench": tag,
        }
        command = ["sleep", "3600"] if running else ["true"]
        ids.append(api.create_container(IMAGE, command, labels=labels, name=f"bench-ui-{tag}-{i}")["Id"])
        if running:
            api.start(ids[-1])
    return ids


@contextmanager
def read_only_proxy():
    root = Path(tempfile.mkdtemp(prefix="dood-bench-ui-"))
    sock = root / "ro.sock"
    process = subprocess.Popen(
        [sys.executable, "-m", "dood.proxy", "--read-only", "--listen", f"unix://{sock}", "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("dood-proxy --read-only did not start")
            time.sleep(0.05)
        yield f"unix://{sock}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def measure(url: str, requests: int, expected: int) -> tuple[float, float, int]:
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.testclient import TestClient

    from dood.ui import access, overview, routes
    from dood.ui.app import create_app
    from dood.ui.engine import EngineReader
    from dood.ui.engines import Engines

    class Everyone:
        def is_authorized_dag(self, **kwargs):
            return True

    reader = EngineReader(docker.APIClient(base_url=url, version="auto", timeout=15))
    routes.engines = lambda: Engines({"": reader})
    access._auth_manager = lambda: Everyone()
    # Task states come from one SQL query on Airflow's database, which this benchmark has not got; created
    # containers never need one (only running ones can be orphans). Other sessions' running containers may.
    overview.task_states = lambda keys: {}
    app = create_app()
    app.dependency_overrides[get_user] = lambda: object()
    client = TestClient(app)
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get("/containers")
        times.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text[:500]
    shown = response.text.count("data-container=")
    assert shown >= expected, f"the page shows {shown} containers, expected at least {expected}"
    return times[0], statistics.median(times[1:] or times), shown


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=200)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--via-proxy", action="store_true")
    parser.add_argument("--running", action="store_true", help="start the containers (inspect + stats per row)")
    parser.add_argument("--append", type=Path)
    args = parser.parse_args()
    api = docker.APIClient(base_url="unix:///var/run/docker.sock", version="auto")
    tag = uuid.uuid4().hex[:8]
    started = time.perf_counter()
    ids = create_containers(api, args.containers, tag, running=args.running)
    created_in = time.perf_counter() - started
    try:
        results = {"direct socket": measure("unix:///var/run/docker.sock", args.requests, args.containers)}
        if args.via_proxy:
            with read_only_proxy() as url:
                results["dood-proxy --read-only"] = measure(url, args.requests, args.containers)
    finally:
        for cid in ids:
            api.remove_container(cid, force=True)
    lines = [
        "",
        f"## DooD page with {args.containers} containers ({dt.date.today()}, `benchmarks/bench_ui.py`)",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}, "
        f"Python {platform.python_version()}, Docker {api.version().get('Version')}, "
        f"load average {os.getloadavg()[0]:.1f} at the end. {args.containers} containers "
        f"{'started (running sleep)' if args.running else 'created (not started)'} in "
        f"{created_in:.1f} s; {args.requests} requests of `/dood/containers` each (TestClient: routing, "
        "dependencies, engine calls, Jinja rendering; Airflow's login and the task-state query stubbed).",
        "",
        "| Engine endpoint | First request (cold caches) | Median of the others | Rows shown | Goal |",
        "|---|---|---|---|---|",
    ]
    for name, (cold, warm, shown) in results.items():
        ok = "met" if max(cold, warm) < 1 else "**missed**"
        lines.append(f"| {name} | {cold * 1000:.0f} ms | {warm * 1000:.0f} ms | {shown} | < 1 s: {ok} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.append:
        with args.append.open("a", encoding="utf-8") as handle:
            handle.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
