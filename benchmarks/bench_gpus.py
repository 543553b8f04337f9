"""GPU claims on a real engine: claim → create latency, and GPU freed → next waiter's container started.

Runs on a second dockerd of its own with the fake NVIDIA hook (tests/integration/second_engine.py; needs
root): `sudo .venv/bin/python benchmarks/bench_gpus.py [--waiters 50] [--gpus 4] [--seconds 1]`.

1. claim → create: one task at a time, GPUs free: `GpuClaims.create` (lock, list, create with DeviceIDs,
   lock check, unlock) against a plain `create` of the same body without GPUs.
2. freed → started: `--waiters` tasks asking for 1 GPU each at once, on `--gpus` GPUs, each running
   `sleep --seconds`; for every task that got a GPU another had held, from the holder's FinishedAt to this
   container's StartedAt (both the engine's clock), and to its create returning (the claim itself).
3. Engine calls: every Docker API request of the run, counted by endpoint (event streams count once each).
4. Where the time goes (`--phases`): for every task of (2) that got a GPU another had held, from the holder's
   FinishedAt to each step of its claim in its own thread: the event that woke it, the lock taken, its
   create sent and returned, the lock removed, its start called, StartedAt (engine), start returned.

`--design ideal` runs (2) with an allocator inside this process (a condition variable, first come first
served, no engine call): the floor that the engine's own create and start under this load leave.
`--design old` runs (2) with the claims of commit 03572e6 (every release wakes every waiter; no queue), the
version measured at 8.8 s median, for an A/B on the same machine at the same time.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import platform
import re
import statistics
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import docker

from dood.config.model import parse_config
from dood.config.resources import Resources
from dood.gpus.claims import GpuClaims
from dood.lifecycle.launch import ContainerLauncher, ContainerSpec
from dood.naming import TaskIdentity
from tests.integration.second_engine import SecondEngine

IMAGE = "dood-test-busybox:latest"
OLD_COMMIT = "03572e6"  # the claims before the queue: every die/destroy woke every waiter
CALLS: collections.Counter[str] = collections.Counter()
_CALLS_LOCK = threading.Lock()
_ID = re.compile(r"/[0-9a-f]{64}|/dood-[^/?]+")
_PHASES = threading.local()  # this task's timeline: (step, time.time()), when --phases
STEPS = ("woken", "locked", "create_sent", "created", "unlocked", "start_called", "StartedAt", "start_returned")


def _count_calls() -> None:
    """Count every Docker API request (docker-py sends them all through requests.Session.request)."""
    original = docker.APIClient.request

    def request(self, method, url, *args, **kwargs):
        path = _ID.sub("/{id}", url.split("/v1.", 1)[-1].split("?", 1)[0])
        with _CALLS_LOCK:
            CALLS[f"{method} {path.split('/', 1)[-1]}"] += 1
        return original(self, method, url, *args, **kwargs)

    docker.APIClient.request = request


def _mark(step: str) -> None:
    timeline = getattr(_PHASES, "timeline", None)
    if timeline is not None:
        timeline.append((step, time.time()))


def _trace_phases() -> None:
    """Mark each step of a claim in the calling thread's timeline (wrapping the methods that do them)."""
    from dood.gpus.lock import EngineLock
    from dood.gpus.wakeup import Wakeup

    def wrap(owner, name, before=None, after=None):
        original = getattr(owner, name)

        def traced(*args, **kwargs):
            if before:
                before(args)
            result = original(*args, **kwargs)
            if after:
                after(args, result)
            return result

        setattr(owner, name, traced)

    wrap(Wakeup, "saw", after=lambda args, woke: woke and _mark("woken"))
    wrap(EngineLock, "acquire", after=lambda args, lock: lock and _mark("locked"))
    wrap(EngineLock, "released", after=lambda args, _: _mark("unlocked"))
    wrap(
        ContainerLauncher, "start", before=lambda args: _mark("start_called"), after=lambda *_: _mark("start_returned")
    )

    def gpu_create(args) -> bool:
        return "dood.gpus" in ((args[1] if len(args) > 1 else {}).get("Labels") or {})

    wrap(
        docker.APIClient,
        "create_container_from_config",
        before=lambda args: gpu_create(args) and _mark("create_sent"),
        after=lambda args, _: gpu_create(args) and _mark("created"),
    )


def _phases(before: dict, after: dict) -> dict[str, float]:
    """Seconds from the holder's end to each step of the successor's claim (the last of each after it)."""
    freed = before["finished"]
    marks = {step: at for step, at in after.get("timeline", []) if at >= freed}
    marks["StartedAt"] = after["started"]
    return {step: marks[step] - freed for step in STEPS if step in marks}


class _IdealClaims:
    """The floor: GPUs handed out inside this process, first come first served, freed when `wait` returns."""

    _cond = threading.Condition()
    _free: list[str] = []
    _queue: collections.deque = collections.deque()

    @classmethod
    def reset(cls, devices) -> None:
        cls._free, cls._queue = list(devices), collections.deque()

    @classmethod
    def of(cls, api, config, **kwargs) -> _IdealClaims:
        return cls()

    def create(self, body, create):
        from dood.gpus.holdings import claimed_body

        me = object()
        with self._cond:
            self._queue.append(me)
            self._cond.wait_for(lambda: self._queue[0] is me and self._free)
            self._queue.popleft()
            self.claimed = (self._free.pop(0),)
            self._cond.notify_all()
        return create(claimed_body(body, self.claimed))

    def release(self) -> None:
        with self._cond:
            self._free.append(self.claimed[0])
            self._cond.notify_all()


def _old_claims():
    """GpuClaims as of OLD_COMMIT, loaded from git into a module of its own."""
    import subprocess

    source = subprocess.run(
        ["git", "show", f"{OLD_COMMIT}:plugins/dood/gpu_claims.py"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    spec = importlib.util.spec_from_loader("dood_gpu_claims_old", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, "gpu_claims_old.py", "exec"), module.__dict__)  # noqa: S102 - our own history
    return module.GpuClaims


def _epoch(value: str) -> float:
    head, _, fraction = value.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{fraction[:6] or '0'}+00:00").timestamp()


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"n": len(values), "median_ms": round(statistics.median(ordered) * 1000), "p95_ms": round(p95 * 1000)}


def _spec(task: str, gpus, command) -> ContainerSpec:
    identity = TaskIdentity(dag_id="dood_bench_gpus", task_id=task, run_id=uuid.uuid4().hex[:8])
    return ContainerSpec(identity, IMAGE, command=command, user="1000:1000", resources=Resources(gpus=gpus))


def claim_latency(engine: SecondEngine, config, samples: int) -> dict[str, dict[str, float]]:
    api = engine.api()
    launcher = ContainerLauncher(api)
    claimed, plain, starts = [], [], {0: [], 1: []}
    for i in range(samples):
        for gpus, into in ((1, claimed), (0, plain)):
            spec = _spec(f"c{i}-{gpus}", gpus, ["true"])
            body = launcher.create_body(spec)
            claims = GpuClaims.of(api, config, image=IMAGE, user=spec.user) if gpus else None
            started = time.perf_counter()
            container_id = launcher.create(spec, body, gpus=claims)
            into.append(time.perf_counter() - started)
            started = time.perf_counter()
            launcher.start(container_id)  # with GPUs: the (fake) NVIDIA hook runs as a prestart hook
            starts[gpus].append(time.perf_counter() - started)
            api.wait(container_id)
            api.remove_container(container_id, force=True)
    return {
        "claim_then_create": _stats(claimed),
        "plain_create": _stats(plain),
        "start_with_gpu_hook": _stats(starts[1]),
        "start_without_gpu": _stats(starts[0]),
    }


def _task(engine: SecondEngine, config, index: int, seconds: float, claims_class=GpuClaims) -> dict:
    _PHASES.timeline = []
    api = engine.api()
    launcher = ContainerLauncher(api)
    spec = _spec(f"w{index}", 1, ["sleep", str(seconds)])
    body = launcher.create_body(spec)
    claims = claims_class.of(api, config, image=IMAGE, user=spec.user, emit=lambda _: None)
    container_id = launcher.create(spec, body, gpus=claims)
    created = time.time()
    launcher.start(container_id)
    launcher.wait(container_id)
    if hasattr(claims, "release"):
        claims.release()
    state = api.inspect_container(container_id)["State"]
    api.remove_container(container_id, force=True)
    return {
        "gpu": claims.claimed[0],
        "created": created,
        "started": _epoch(state["StartedAt"]),
        "finished": _epoch(state["FinishedAt"]),
        "timeline": _PHASES.timeline,
    }


def freed_to_started(
    engine: SecondEngine, config, waiters: int, seconds: float, claims_class=GpuClaims
) -> dict[str, dict[str, float]]:
    CALLS.clear()
    with ThreadPoolExecutor(waiters) as pool:
        runs = list(pool.map(lambda i: _task(engine, config, i, seconds, claims_class), range(waiters)))
    to_started, to_claimed = [], []
    steps: dict[str, list[float]] = collections.defaultdict(list)
    slowest: list[tuple[float, float, dict[str, float]]] = []
    for gpu in {run["gpu"] for run in runs}:
        on_gpu = sorted((run for run in runs if run["gpu"] == gpu), key=lambda run: run["started"])
        for before, after in zip(on_gpu, on_gpu[1:], strict=False):
            assert after["started"] >= before["finished"], f"GPU {gpu} shared"
            to_started.append(after["started"] - before["finished"])
            to_claimed.append(after["created"] - before["finished"])
            phases = _phases(before, after)
            for step, seconds_after in phases.items():
                steps[step].append(seconds_after)
            slowest.append((phases["StartedAt"], before["finished"], phases))
    first = min(run["started"] for run in runs)
    span = max(run["finished"] for run in runs) - first
    return {
        "freed_to_claimed": _stats(to_claimed),
        "freed_to_started": _stats(to_started),
        "wall_seconds": {"n": waiters, "span": round(span, 1), "ideal": waiters * seconds / len(config.gpus.devices)},
        "engine_calls": dict(CALLS.most_common()),
        "engine_calls_total": sum(CALLS.values()),
        "phases_from_freed": {step: _stats(steps[step]) for step in STEPS if steps.get(step)},
        "slowest_five": [
            {"freed_after_first_start_s": round(freed - first, 2), **{k: round(v, 3) for k, v in phases.items()}}
            for _, freed, phases in sorted(slowest, key=lambda item: item[0])[-5:]
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiters", type=int, default=50)
    parser.add_argument("--gpus", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument(
        "--design", default="new", help="new, old, ideal, comma-separated (e.g. new,ideal); both: new,old"
    )
    parser.add_argument("--phases", action="store_true", help="time each step of a claim (section 4)")
    parser.add_argument("--skip-claim", action="store_true", help="skip (1), the one-at-a-time claim latency")
    args = parser.parse_args()
    designs = {"new", "old"} if args.design == "both" else set(args.design.split(","))
    if not designs <= {"new", "old", "ideal"}:
        parser.error(f"--design: new, old, ideal or both, not {args.design}")
    if os.geteuid() != 0:
        print("bench_gpus: starts a second dockerd (needs root)", file=sys.stderr)
        return 2
    engine = SecondEngine.for_session()
    engine.start()
    try:
        engine.load_image(IMAGE)
        config = parse_config({"docker": {"url": engine.url}, "gpus": {"devices": [str(i) for i in range(args.gpus)]}})
        result = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
            "engine": engine.api().version()["Version"],
        }
        if not args.skip_claim:
            result["claim"] = claim_latency(engine, config, args.samples)
        _count_calls()
        if args.phases:
            _trace_phases()
        if "new" in designs:
            result["waiters"] = freed_to_started(engine, config, args.waiters, args.seconds)
            result["load_after_new"] = round(os.getloadavg()[0], 1)
        if "ideal" in designs:
            _IdealClaims.reset(config.gpus.devices)
            result["waiters_ideal"] = freed_to_started(engine, config, args.waiters, args.seconds, _IdealClaims)
            result["load_after_ideal"] = round(os.getloadavg()[0], 1)
        if "old" in designs:
            result["waiters_old"] = freed_to_started(engine, config, args.waiters, args.seconds, _old_claims())
            result["load_after_old"] = round(os.getloadavg()[0], 1)
    finally:
        engine.stop()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
