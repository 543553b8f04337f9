"""1,000 concurrent deferred waits over two Docker hosts, through their dood-proxies, in one triggerer process.

Issue 14's scale test: host-a is the main engine behind a dood-proxy on a unix socket, host-b a second
dockerd of the benchmark's own behind a dood-proxy reached over TCP with mutual TLS (as a host on another
machine is), certificates from scripts/make-host-certs.sh. COUNT busybox containers (`sleep N`, N staggered
MIN..MAX s), half on each engine, labelled as that host's and stack's (each proxy shows only its own); COUNT
`DoodContainerTrigger`s wait in this one event loop, each on its own session through its host's proxy; once
all wait, the containers are started (`docker start` in child processes). Latency, memory and CPU are read
as in bench_trigger.py (`measure`), per host as well. Needs root (the second engine).

    .venv/bin/python benchmarks/bench_trigger_hosts.py [--count 1000] [--min-sleep 5] [--max-sleep 40] [--json out]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
from bench_trigger import IMAGE, CountedTrigger, measure, percentile, sleeps, start_with_cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.proxy_process import running_proxy
from tests.integration.second_engine import SecondEngine
from tests.ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
STACK = "bench-hosts"
BENCH = {"dood.managed": "true", "dood.stack": STACK, "dood.bench": "trigger-hosts"}
POLICY = "  allowed_images: ['dood-test-busybox:*']\n"


def create(api: docker.APIClient, host: str, durations: list[int]) -> list[str]:
    labels = BENCH | {"dood.host": host}
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda s: api.create_container(IMAGE, ["sleep", str(s)], labels=labels)["Id"], durations))


def remove_ours(api: docker.APIClient) -> int:
    found = api.containers(all=True, filters={"label": "dood.bench=trigger-hosts"})
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda c: api.remove_container(c["Id"], force=True, v=True), found))
    return len(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--min-sleep", type=float, default=5)
    parser.add_argument("--max-sleep", type=float, default=40)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    main_api = docker.APIClient(base_url="unix:///var/run/docker.sock", version="auto", timeout=120)
    engine = SecondEngine.for_session(role="bench-trig", subnet=219)
    engine.start()
    work = Path(tempfile.mkdtemp(prefix="bench-trigger-hosts-"))
    try:
        engine.load_image(IMAGE)
        b_api = engine.api(timeout=120)
        certs = work / "certs"
        subprocess.run(["bash", str(ROOT / "scripts/make-host-certs.sh"), str(certs), "host-b"], check=True)
        port = free_port()
        tls = [
            "--tls-listen", f"tcp://127.0.0.1:{port}",
            "--tls-cert", str(certs / "host-b/server-cert.pem"), "--tls-key", str(certs / "host-b/server-key.pem"),
            "--tls-ca-cert", str(certs / "ca.pem"),
        ]  # fmt: skip
        (work / "a").mkdir()
        (work / "b").mkdir()
        with (
            running_proxy(work / "a", POLICY, "--stack", STACK, "--host", "host-a") as proxy_a,
            running_proxy(work / "b", POLICY, "--stack", STACK, "--host", "host-b", "--upstream", engine.url, *tls),
        ):
            wait_for_port(port)
            half = args.count // 2
            durations = sleeps(args.count, args.min_sleep, args.max_sleep)
            load_before = os.getloadavg()[0]
            on_a = create(main_api, "host-a", durations[0::2][:half])
            on_b = create(b_api, "host-b", durations[1::2][: args.count - half])
            host_of = {cid: "host-a" for cid in on_a} | {cid: "host-b" for cid in on_b}
            client = {
                "tls_ca_cert": str(certs / "client/ca.pem"),
                "tls_client_cert": str(certs / "client/cert.pem"),
                "tls_client_key": str(certs / "client/key.pem"),
            }

            def trigger_for(cid: str) -> dict:
                if host_of[cid] == "host-a":
                    return {"container_id": cid, "docker_url": proxy_a.url, "api_version": "1.41"}
                return {"container_id": cid, "docker_url": f"tcp://127.0.0.1:{port}", "api_version": "1.41", **client}

            async def start(ids: list[str]) -> None:
                await asyncio.gather(
                    start_with_cli(on_a, processes=2), start_with_cli(on_b, processes=2, host=engine.url)
                )

            async def warm() -> None:  # one wait through each proxy: imports, TLS first use
                for api, host in ((main_api, "host-a"), (b_api, "host-b")):
                    cid = api.create_container(IMAGE, ["true"], labels=BENCH | {"dood.host": host})["Id"]
                    host_of[cid] = host
                    api.start(cid)
                    async for _ in CountedTrigger(**trigger_for(cid)).run():
                        pass
                CountedTrigger.waiting = 0

            per_host: dict[str, list[float]] = {"host-a": [], "host-b": []}
            measured = set(on_a + on_b)
            original = CountedTrigger.run

            async def timed_run(self):
                async for event in original(self):
                    if self.container_id in measured:  # not the warm-up waits
                        per_host[host_of[self.container_id]].append(time.time() - event.payload["finished_at"])
                    yield event

            CountedTrigger.run = timed_run
            results = asyncio.run(measure(main_api, on_a + on_b, trigger_for=trigger_for, start=start, warm=warm))
            results["per_host"] = {
                host: {
                    "count": len(values),
                    "latency_median_s": statistics.median(values),
                    "latency_p95_s": percentile(values, 0.95),
                }
                for host, values in per_host.items()
                if values
            }
            results["loadavg_1m_before_after"] = [load_before, os.getloadavg()[0]]
            results["docker_server"] = main_api.version()["Version"]
    finally:
        removed = remove_ours(main_api)
        engine.stop()
        print(f"removed {removed} benchmark containers of the main engine; the second engine is gone", file=sys.stderr)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
