"""dood-proxy vs the direct Docker socket: per-container overhead and log-streaming throughput.

    .venv/bin/python benchmarks/bench_proxy.py [--runs 20] [--stream-runs 5] [--lines 300000]
                                               [--append docs/benchmarks.md]

Both sides use the docker SDK's low-level APIClient, one long-lived client each (as a worker would), on
the same engine and image. Runs are interleaved (direct, proxy, proxy, direct, ...) so drift in the
engine's speed hits both alike. The proxy runs as its own process (`python -m dood.proxy`), as deployed.

* overhead: create + start + wait + logs + remove of a container running `true`; median wall time.
* streaming: a container printing `--lines` lines (`seq`, then it sleeps), followed with
  `logs(stream=True, follow=True)` from start to the last line; median wall time, and lines per second.

Goal: the proxy costs at most 1.1x the direct socket on both. `--append` adds the results as a section
at the end of the given Markdown file (appended, never rewritten).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import IMAGE, median

DIRECT_URL = "unix:///var/run/docker.sock"
GOAL = 1.10
LABELS = {"dood.dag_id": "bench_proxy"}
USER = "50000:0"  # the policy runs containers as a numeric non-root user


def start_proxy(workdir: Path) -> tuple[subprocess.Popen, str]:
    config = workdir / "dood.yaml"
    config.write_text(f"policy:\n  allowed_images: ['{IMAGE.split(':')[0]}:*']\n", encoding="utf-8")
    sock = workdir / "proxy.sock"
    log = (workdir / "proxy.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dood.proxy",
            "--listen",
            f"unix://{sock}",
            "--config",
            str(config),
            "--log-level",
            "WARNING",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while not sock.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"dood-proxy did not start: {(workdir / 'proxy.log').read_text()}")
        time.sleep(0.05)
    return process, f"unix://{sock}"


def one_container(api: docker.APIClient) -> float:
    """create + start + wait + logs + remove of `true`; seconds."""
    began = time.perf_counter()
    cid = api.create_container(IMAGE, ["true"], user=USER, labels=LABELS, name=f"bench-proxy-{uuid.uuid4().hex[:12]}")[
        "Id"
    ]
    try:
        api.start(cid)
        if api.wait(cid)["StatusCode"] != 0:
            raise RuntimeError("`true` failed")
        api.logs(cid)
    finally:
        api.remove_container(cid, force=True, v=True)
    return time.perf_counter() - began


def stream_lines(api: docker.APIClient, lines: int) -> float:
    """Seconds from start until the last of `lines` lines has been read through logs(follow=True).

    The container stays up after printing (`sleep`): Docker 20.10 may end a follow stream early when the
    container exits while the reader is still behind, which would cut the measurement short.
    """
    script = f"seq {lines}; sleep 300"
    cid = api.create_container(
        IMAGE, ["sh", "-c", script], user=USER, labels=LABELS, name=f"bench-proxy-{uuid.uuid4().hex[:12]}"
    )["Id"]
    try:
        began = time.perf_counter()
        api.start(cid)
        seen = 0
        stream = api.logs(cid, stream=True, follow=True, stdout=True, stderr=True)
        try:
            for chunk in stream:
                seen += chunk.count(b"\n")
                if seen >= lines:
                    break
        finally:
            stream.close()
        elapsed = time.perf_counter() - began
        if seen != lines:
            raise RuntimeError(f"read {seen} lines, expected {lines}")
    finally:
        api.remove_container(cid, force=True, v=True)
    return elapsed


def interleaved(runs: int, measure, clients: dict[str, docker.APIClient]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in clients}
    order = list(clients)
    for run in range(runs):
        for name in order if run % 2 == 0 else reversed(order):
            times[name].append(measure(clients[name]))
    return times


def proxy_peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def proxy_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine(api: docker.APIClient) -> str:
    memory = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    kib = int(memory.split()[1])
    version = api.version()
    return (
        f"{os.cpu_count()} CPUs (nproc), {kib / 1024 / 1024:.1f} GiB memory, kernel {platform.release()}, "
        f"Docker server {version['Version']} (API {version['ApiVersion']}), Python {platform.python_version()}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="overhead runs per side (default: %(default)s)")
    parser.add_argument("--stream-runs", type=int, default=5, help="streaming runs per side (default: %(default)s)")
    parser.add_argument(
        "--lines", type=int, default=300_000, help="lines printed when streaming (default: %(default)s)"
    )
    parser.add_argument("--append", type=Path, help="Markdown file to append the results section to")
    args = parser.parse_args()
    command = "$ " + shlex.join([".venv/bin/python", "benchmarks/bench_proxy.py", *sys.argv[1:]])

    load_before = Path("/proc/loadavg").read_text().split()[:3]
    workdir = Path(tempfile.mkdtemp(prefix="dood-bench-proxy-"))
    process, proxy_url = start_proxy(workdir)
    clients = {
        "direct": docker.APIClient(base_url=DIRECT_URL, version="auto", timeout=300),
        "proxy": docker.APIClient(base_url=proxy_url, version="auto", timeout=300),
    }
    try:
        for api in clients.values():  # warm-up: image cache, connections, the proxy's first imports
            one_container(api)
        cpu_before = proxy_cpu_seconds(process.pid)
        overhead = interleaved(args.runs, one_container, clients)
        streaming = interleaved(args.stream_runs, lambda api: stream_lines(api, args.lines), clients)
        proxy_cpu = proxy_cpu_seconds(process.pid) - cpu_before
        rss = proxy_peak_rss_mib(process.pid)
        about = machine(clients["direct"])
        load_after = Path("/proc/loadavg").read_text().split()[:3]
    finally:
        for api in clients.values():
            api.close()
        process.terminate()
        process.wait(timeout=10)

    o_direct, o_proxy = median(overhead["direct"]), median(overhead["proxy"])
    s_direct, s_proxy = median(streaming["direct"]), median(streaming["proxy"])
    o_ratio, s_ratio = o_proxy / o_direct, s_proxy / s_direct
    met = o_ratio <= GOAL and s_ratio <= GOAL
    table = "\n".join(
        [
            "| Measure | Direct socket | Through dood-proxy | Proxy / direct |",
            "|---|---|---|---|",
            f"| Per container (create+start+wait+logs+remove of `true`), median of {args.runs} | "
            f"{o_direct * 1000:.0f} ms | {o_proxy * 1000:.0f} ms | {o_ratio:.3f}x |",
            f"| Log streaming, {args.lines:,} lines (`seq`), median of {args.stream_runs} | "
            f"{s_direct:.2f} s ({args.lines / s_direct:,.0f} lines/s) | "
            f"{s_proxy:.2f} s ({args.lines / s_proxy:,.0f} lines/s) | {s_ratio:.3f}x |",
        ]
    )
    ranges = "; ".join(
        f"{what} {side} {min(times[side]) * scale:.{digits}f}-{max(times[side]) * scale:.{digits}f} {unit}"
        for what, times, scale, digits, unit in (
            ("per container", overhead, 1000, 0, "ms"),
            ("streaming", streaming, 1, 2, "s"),
        )
        for side in ("direct", "proxy")
    )
    section = f"""
## Proxy vs direct socket

Does putting `dood-proxy` between the client and the Docker socket slow dood down? Same engine, same
image (`{IMAGE}`), the docker SDK's `APIClient` on both sides, runs interleaved; the proxy runs as its
own process (`python -m dood.proxy`), checking every call against the policy.

- Machine: {about}
- Date: {dt.datetime.now(dt.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y")}
- Command: `{command}`
- Load average (1, 5, 15 min) before: {" ".join(load_before)}; after: {" ".join(load_after)} (other work on the host
  hits both sides alike: runs are interleaved)

{table}

The proxy process used {proxy_cpu:.1f} s of CPU over all measured runs; its peak RSS was {rss:.0f} MiB.
Ranges (min-max): {ranges}.

Goal (proxy at most {GOAL:.1f}x the direct socket on both): **{"met" if met else "not met"}**.
"""
    print(section)
    if args.append:  # append only, never rewrite: other benchmarks write other sections of that file
        current = args.append.read_text(encoding="utf-8") if args.append.exists() else ""
        separator = "" if not current or current.endswith("\n\n") else ("\n" if current.endswith("\n") else "\n\n")
        with args.append.open("a", encoding="utf-8") as handle:
            handle.write(separator + section.lstrip("\n"))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
