"""How many DoodContainerTriggers one triggerer process carries: 200 concurrent waits, one event loop.

Creates COUNT busybox containers running ``sleep N`` (N staggered from MIN to MAX seconds), starts
COUNT triggers with ``asyncio.gather`` in this one process, and once every trigger is waiting on its
event stream starts the containers (with the ``docker`` CLI in child processes, so their CPU is not
counted as ours). For each trigger: latency = the moment it yielded its event - Docker's die time
(``timeNano`` of the die event, reported as ``finished_at``).

Memory: idle RSS is read after one warm-up wait (imports and first-use caches are paid once per
process, not per trigger); the peak RSS above it (kernel high-water mark, reset through
/proc/self/clear_refs, and 20 Hz samples) is divided by COUNT. CPU: getrusage(RUSAGE_SELF) over the
trigger phase. Every container carries the label dood.bench=trigger and is removed at the end,
failure or not (and before the start, if an interrupted earlier run left some).

    .venv/bin/python benchmarks/bench_trigger.py [--count 200] [--min-sleep 2] [--max-sleep 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import resource
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker

from dood.triggers.container import DoodContainerTrigger

IMAGE = "dood-test-busybox:latest"
DOCKER_URL = "unix:///var/run/docker.sock"
# Not dood.managed: the janitor (which may be sweeping the same engine) must not judge these.
LABELS = {"dood.bench": "trigger"}


class CountedTrigger(DoodContainerTrigger):
    """The real trigger, plus a count of waits that reached their event stream (to start containers then)."""

    waiting = 0

    async def _next_outcome(self, docker, stream, watch):
        CountedTrigger.waiting += 1
        return await super()._next_outcome(docker, stream, watch)


def rss_kib(field: str = "VmRSS") -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) to the current RSS; False when not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def sleeps(count: int, low: float, high: float) -> list[int]:
    return [round(low + (high - low) * i / max(count - 1, 1)) for i in range(count)]


def create_containers(api: docker.APIClient, durations: list[int]) -> list[str]:
    def create(seconds: int) -> str:
        return api.create_container(IMAGE, ["sleep", str(seconds)], labels=LABELS)["Id"]

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(create, durations))


def remove_all(api: docker.APIClient) -> int:
    """Remove every container of this benchmark, whatever state it is in."""
    found = api.containers(all=True, filters={"label": [f"{k}={v}" for k, v in LABELS.items()]})
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda c: api.remove_container(c["Id"], force=True, v=True), found))
    return len(found)


async def start_with_cli(ids: list[str], processes: int = 4, host: str = DOCKER_URL) -> None:
    """`docker start` in child processes: their CPU is not ours."""
    chunks = [ids[i::processes] for i in range(processes)]
    procs = [
        await asyncio.create_subprocess_exec("docker", "-H", host, "start", *chunk, stdout=asyncio.subprocess.DEVNULL)
        for chunk in chunks
        if chunk
    ]
    codes = [await proc.wait() for proc in procs]
    if any(codes):
        raise RuntimeError(f"docker start failed: {codes}")


async def warm_up(api: docker.APIClient) -> None:
    """One complete wait, so imports and first-use caches are part of the idle baseline."""
    cid = api.create_container(IMAGE, ["true"], labels=LABELS)["Id"]
    api.start(cid)
    async for _ in DoodContainerTrigger(container_id=cid, docker_url=DOCKER_URL).run():
        pass


async def sample_rss(stop: asyncio.Event, peak: list[int]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], rss_kib())
        await asyncio.sleep(0.05)


async def measure(api: docker.APIClient, ids: list[str], trigger_for=None, start=None, warm=None) -> dict:
    """Wait for every container in `ids` with one trigger each, in this one loop. `trigger_for(cid)`: the
    trigger's arguments (default: the main engine's socket); `start(ids)`: starts them once all wait."""
    trigger_for = trigger_for or (lambda cid: {"container_id": cid, "docker_url": DOCKER_URL})
    await (warm() if warm else warm_up(api))
    gc.collect()
    idle_kib = rss_kib()
    hwm_reset = reset_peak_rss()
    cpu_before = cpu_seconds()
    phase_started = time.monotonic()
    stop, sampled_peak = asyncio.Event(), [idle_kib]
    sampler = asyncio.create_task(sample_rss(stop, sampled_peak))

    async def wait_one(cid: str) -> tuple[dict, float]:
        async for event in CountedTrigger(**trigger_for(cid)).run():
            return event.payload, time.time()
        raise AssertionError("no event")

    waits = asyncio.gather(*(wait_one(cid) for cid in ids))
    while CountedTrigger.waiting < len(ids):
        await asyncio.sleep(0.05)
    subscribed_seconds = time.monotonic() - phase_started
    waiting_kib = rss_kib()
    await (start(ids) if start else start_with_cli(ids))
    results = await waits
    stop.set()
    await sampler
    cpu_used = cpu_seconds() - cpu_before
    peak_kib = max(sampled_peak[0], rss_kib("VmHWM") if hwm_reset else 0)
    latencies = [yielded - payload["finished_at"] for payload, yielded in results]
    return {
        "count": len(ids),
        "statuses": {s: sum(p["status"] == s for p, _ in results) for s in {p["status"] for p, _ in results}},
        "latency_median_s": statistics.median(latencies),
        "latency_p95_s": percentile(latencies, 0.95),
        "latency_max_s": max(latencies),
        "idle_rss_mib": idle_kib / 1024,
        "waiting_rss_mib": waiting_kib / 1024,
        "peak_rss_mib": peak_kib / 1024,
        "waiting_rss_per_container_mib": (waiting_kib - idle_kib) / 1024 / len(ids),
        "peak_rss_per_container_mib": (peak_kib - idle_kib) / 1024 / len(ids),
        "peak_source": "VmHWM (reset) and 20 Hz samples" if hwm_reset else "20 Hz samples",
        "cpu_seconds": cpu_used,
        "phase_seconds": time.monotonic() - phase_started,
        "all_subscribed_after_s": subscribed_seconds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--min-sleep", type=float, default=2)
    parser.add_argument("--max-sleep", type=float, default=30)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    api = docker.APIClient(base_url=DOCKER_URL, version="auto")
    remove_all(api)  # leftovers of an interrupted earlier run
    load_before = os.getloadavg()[0]  # other work on the machine shows up in the latencies
    try:
        ids = create_containers(api, sleeps(args.count, args.min_sleep, args.max_sleep))
        results = asyncio.run(measure(api, ids))
    finally:
        removed = remove_all(api)
        left = api.containers(all=True, filters={"label": [f"{k}={v}" for k, v in LABELS.items()]})
        print(f"removed {removed} benchmark containers; {len(left)} left", file=sys.stderr)
    results["docker_server"] = api.version()["Version"]
    results["loadavg_1m_before_after"] = [load_before, os.getloadavg()[0]]
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
