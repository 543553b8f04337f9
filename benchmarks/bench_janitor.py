"""The janitor's sweep of many orphans on the real engine: how long until they are all stopped and removed.

Every orphan costs a stop (SIGTERM, the grace period, SIGKILL) then a removal (`dood.lifecycle.teardown.discard_all`).
A program that is PID 1 in its container (python, sleep: no handler installed) ignores SIGTERM, so its stop
waits the whole grace period; under Docker's init (`defaults.init`, on by default) SIGTERM reaches it and it
ends at once. The janitor makes `STOP_WORKERS` (16) Docker calls at a time. Scenarios, each on fresh orphans:

* ``mixed``: N orphans, K of them ``sh -c 'trap "" TERM; sleep 600'`` (ignore SIGTERM even under init: the
  grace period is forced), the rest ``python3 -c 'time.sleep(600)'`` (python as the program, no handler),
  all created with ``HostConfig.Init: true``. Goal: under 2 x the grace period.
* ``no-init``: N python orphans without init (PID 1 ignores SIGTERM): every one needs the SIGKILL.
* ``before``: the mixed kind, ended as the janitor did before: `dood.lifecycle.teardown.discard` (docker stop, then
  remove) one orphan after the other, on a sample of S orphans (its time per orphan is what to compare).

The janitor now signals every orphan first, then waits for each until its own grace period ends
(`dood.lifecycle.teardown.discard_all`), so the stubborn ones' grace periods overlap.

The orphans carry dood's labels (DAG ``bench_janitor``, a run that Airflow never had: the task state lookup
answers "no such task instance", as Airflow would) and a scope label of this run; the sweep is limited to
that scope, so nothing else on the engine is touched. The time is the whole `janitor.sweep` (list, inspect,
decide, stop and remove), from the benchmark's process; how each orphan ended comes from the engine (its
``die`` event's exit code: 143 = SIGTERM, 137 = SIGKILL after the grace).

    .venv/bin/python benchmarks/bench_janitor.py                      # 100 orphans, 16 stubborn, grace 5 s
    .venv/bin/python benchmarks/bench_janitor.py --orphans 100 --stubborn 16 --grace 5 --before-sample 10 \\
        --out benchmarks/results/janitor.json
    .venv/bin/python benchmarks/bench_janitor.py --quick              # 8 orphans: checks that it runs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import docker

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from dood.janitor import MISSING, STOP_WORKERS, sweep  # noqa: E402
from dood.lifecycle.teardown import discard  # noqa: E402

DOCKER_URL = "unix:///var/run/docker.sock"
SHELL_IMAGE = os.environ.get("DOOD_BENCH_IMAGE", "dood-test-busybox:latest")
PYTHON_IMAGE = os.environ.get("DOOD_BENCH_PYTHON_IMAGE", "dood-python-base:bookworm")
STUBBORN = ["sh", "-c", 'trap "" TERM; sleep 600']
PYTHON = ["python3", "-c", "import time; time.sleep(600)"]
SHELL_PID1 = ["sleep", "600"]  # when no python image is there: busybox sleep as PID 1 ignores SIGTERM alike


def machine() -> dict:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def plant(api, scope: dict[str, str], count: int, stubborn: int, init: bool, python_image: str | None) -> list[str]:
    """`count` running orphans of this scope (`stubborn` of them ignoring SIGTERM), created 8 at a time."""
    run_id = f"gone-{uuid.uuid4().hex[:8]}"

    def one(index: int) -> str:
        if index < stubborn:
            image, command = SHELL_IMAGE, STUBBORN
        else:
            image, command = (python_image, PYTHON) if python_image else (SHELL_IMAGE, SHELL_PID1)
        labels = {
            "dood.managed": "true",
            "dood.stack": "dood",
            "dood.dag_id": "bench_janitor",
            "dood.run_id": run_id,
            "dood.task_id": f"t{index:03d}",
            "dood.map_index": "-1",
            "dood.try_number": "1",
            **scope,
        }
        host_config = api.create_host_config(init=init)
        container = api.create_container(image, command, labels=labels, host_config=host_config)["Id"]
        api.start(container)
        return container

    # stubborn ones spread over the list, as a real sweep meets them (not all in the first batch)
    order = sorted(range(count), key=lambda i: (i * 7919) % count)
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, order))


def wait_running(api, scope: dict[str, str], count: int, timeout: float = 300) -> None:
    filters = {"label": [f"{k}={v}" for k, v in scope.items()], "status": "running"}
    deadline = time.monotonic() + timeout
    while len(api.containers(filters=filters)) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"the {count} orphans were not all running after {timeout:g}s")
        time.sleep(0.5)
    time.sleep(1)  # python's start-up: a SIGTERM before the interpreter runs is no measure of the program


class Deaths:
    """The engine's `die` and `destroy` events of this scope, recorded as they happen: how each orphan
    ended (exit code) and when (epoch seconds, the engine's clock)."""

    def __init__(self, scope: dict[str, str]) -> None:
        self.codes: dict[str, str] = {}
        self.died: dict[str, float] = {}
        self.destroyed: dict[str, float] = {}
        self.error: BaseException | None = None
        self._api = docker.APIClient(base_url=DOCKER_URL, timeout=None)
        label = [f"{k}={v}" for k, v in scope.items()]
        filters = {"type": "container", "event": ["die", "destroy"], "label": label}
        self._stream = self._api.events(filters=filters, decode=True)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self._stream:
                when = int(event.get("timeNano", 0)) / 1e9
                if event.get("Action") == "die":
                    self.codes[event["id"]] = event["Actor"]["Attributes"].get("exitCode", "?")
                    self.died[event["id"]] = when
                else:
                    self.destroyed[event["id"]] = when
        except Exception as exc:  # noqa: BLE001 - closed by stop()
            self.error = exc

    def stop(self) -> None:
        self._stream.close()


def one_after_the_other(api, scope: dict[str, str], grace: int) -> list[str]:
    """The sweep before: each orphan stopped, then removed, before the next one (`dood.lifecycle.teardown.discard`)."""
    listed = api.containers(all=True, filters={"label": [f"{k}={v}" for k, v in scope.items()]})
    for container in listed:
        discard(api, container["Id"], grace)
    return [container["Id"] for container in listed]


def scenario(api, name: str, *, count: int, stubborn: int, init: bool, workers: int, grace: int, python_image):
    scope = {"dood-bench": f"janitor-{uuid.uuid4().hex[:8]}"}
    planted = plant(api, scope, count, stubborn, init, python_image)
    wait_running(api, scope, count)
    deaths = Deaths(scope)
    load_before = os.getloadavg()
    started_at = time.time()
    started = time.monotonic()
    if name == "before":
        verdicts = one_after_the_other(api, scope, grace)
    else:
        verdicts = sweep(
            api,
            lambda labels: MISSING,
            ttl=timedelta(hours=24),
            dry_run=False,
            grace_seconds=grace,
            only_labels=scope,
            workers=workers,
            log=lambda _line: None,
        )
    elapsed = time.monotonic() - started
    load_after = os.getloadavg()
    settle = time.monotonic() + 10  # the event stream may lag behind the calls that returned
    while time.monotonic() < settle and not all(c in deaths.destroyed and c in deaths.died for c in planted):
        time.sleep(0.1)
    deaths.stop()
    died = sorted(deaths.died[c] - started_at for c in planted if c in deaths.died)
    destroyed = sorted(deaths.destroyed[c] - started_at for c in planted if c in deaths.destroyed)
    left = api.containers(all=True, filters={"label": [f"{k}={v}" for k, v in scope.items()]})
    codes = [deaths.codes.get(c, "?") for c in planted]
    result = {
        "scenario": name,
        "orphans": count,
        "stubborn": stubborn,
        "init": init,
        "workers": workers,
        "grace_seconds": grace,
        "removed": len(verdicts),
        "left": len(left),
        "seconds": round(elapsed, 2),
        "seconds_per_orphan": round(elapsed / count, 3),
        "x_grace": round(elapsed / grace, 2),
        "first_die_after_seconds": round(died[0], 2) if died else None,
        "median_die_after_seconds": round(died[len(died) // 2], 2) if died else None,
        "last_die_after_seconds": round(died[-1], 2) if died else None,
        "last_destroy_after_seconds": round(destroyed[-1], 2) if destroyed else None,
        "ended_by_sigterm": codes.count("143") + codes.count("0"),
        "ended_by_sigkill": codes.count("137"),
        "exit_unknown": len(codes) - codes.count("143") - codes.count("0") - codes.count("137"),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
    }
    for container in left:  # never leave a benchmark's orphan behind
        api.remove_container(container["Id"], force=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orphans", type=int, default=100)
    parser.add_argument("--stubborn", type=int, default=16, help="orphans that ignore SIGTERM even under init")
    parser.add_argument("--grace", type=int, default=5)
    parser.add_argument("--workers", type=int, default=STOP_WORKERS)
    parser.add_argument("--before-sample", type=int, default=10, help="orphans of the 'before' scenario (0: skip)")
    parser.add_argument("--scenarios", default="mixed,no-init,before")
    parser.add_argument("--quick", action="store_true", help="8 orphans, 2 stubborn, grace 2 s: checks it runs")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.orphans, args.stubborn, args.grace, args.before_sample = 8, 2, 2, 4
    api = docker.APIClient(base_url=DOCKER_URL, timeout=60)  # as the janitor's hook makes it (a pool of 10)
    try:
        api.inspect_image(PYTHON_IMAGE)
        python_image = PYTHON_IMAGE
    except docker.errors.ImageNotFound:
        python_image = None
        print(f"{PYTHON_IMAGE} missing: busybox `sleep` plays the PID-1 program (it ignores SIGTERM alike)")
    wanted = args.scenarios.split(",")
    results = {"machine": machine(), "python_image": python_image, "scenarios": []}
    common = {"grace": args.grace, "python_image": python_image}
    if "mixed" in wanted:
        results["scenarios"].append(
            scenario(
                api, "mixed", count=args.orphans, stubborn=args.stubborn, init=True, workers=args.workers, **common
            )
        )
    if "no-init" in wanted:
        results["scenarios"].append(
            scenario(api, "no-init", count=args.orphans, stubborn=0, init=False, workers=args.workers, **common)
        )
    if "before" in wanted and args.before_sample:
        sample = args.before_sample
        stubborn = max(1, round(sample * args.stubborn / max(1, args.orphans)))
        results["scenarios"].append(
            scenario(api, "before", count=sample, stubborn=stubborn, init=True, workers=1, **common)
        )
    for row in results["scenarios"]:
        print(
            f"{row['scenario']:8} {row['orphans']:4} orphans ({row['stubborn']} stubborn, init {row['init']}), "
            f"{row['workers']:2} at a time, grace {row['grace_seconds']} s: {row['seconds']:7.2f} s "
            f"({row['x_grace']} x grace, {row['seconds_per_orphan']} s/orphan; dies after "
            f"{row['first_die_after_seconds']}/{row['median_die_after_seconds']}/{row['last_die_after_seconds']} s "
            f"first/median/last, last removal after {row['last_destroy_after_seconds']} s); SIGTERM ended "
            f"{row['ended_by_sigterm']}, SIGKILL {row['ended_by_sigkill']}; left {row['left']}; "
            f"load {row['load_before'][0]} -> {row['load_after'][0]}"
        )
    print(json.dumps(results["machine"]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    failed = [row for row in results["scenarios"] if row["left"] or row["removed"] != row["orphans"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
