"""dood-proxy under many unauthenticated connections to its mutual-TLS listener: memory, and service.

    .venv/bin/python benchmarks/bench_proxy_connections.py [--connections 1000] [--mode half|idle]
                                                           [--source ADDRESS ...] [--env NAME=VALUE ...] [--json PATH]

Starts its own `python -m dood.proxy` (a unix listener and `--tls-listen` on 127.0.0.1, certificates from
scripts/make-host-certs.sh), then opens `--connections` TCP connections to the TLS port that never finish
the handshake: `half` sends a ClientHello and stops there (the proxy answers with its certificate and waits
for the client's), `idle` sends nothing. It reports the proxy's resident memory (VmRSS of its process)

* at rest, after one real request (a client with a certificate: `GET /_ping`);
* with the connections open (once RSS has been steady for 1 s);
* how many of them the proxy still holds (at most 64 per source address and 128 in all: each one beyond
  closes an older one), and whether a real client (from 127.0.0.1; the flood comes from `--source`,
  127.0.0.2 by default, round robin when several) is served, and how fast, while they are open; and how
  many it still holds 8 s after the last one opened (past the 5 s handshake deadline: none);
* after they are closed, once RSS has been steady for 2 s.

`--env` passes variables to the proxy (e.g. `--env MALLOC_ARENA_MAX=2` to compare). No Docker call is made
but the ping, which the proxy relays to the engine (`--upstream`, the local socket by default).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make-host-certs.sh"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def settle(pid: int, steady_seconds: float = 2.0, most: float = 60.0) -> float:
    """RSS once it has not moved by more than 1 MB for `steady_seconds` (or after `most` seconds)."""
    deadline = time.monotonic() + most
    last, since = rss_mb(pid), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = rss_mb(pid)
        if abs(now - last) > 1.0:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= steady_seconds:
            return now
    return rss_mb(pid)


def client_hello(certs: Path) -> bytes:
    """The first flight of a TLS client: what a half-handshaken connection sends."""
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def ping_seconds(port: int, certs: Path) -> float | str:
    """A real client's `GET /_ping` over mutual TLS: seconds, or what went wrong."""
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    context.load_cert_chain(str(certs / "client" / "cert.pem"), str(certs / "client" / "key.pem"))
    began = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
                answer = b""
                while chunk := tls.recv(65536):
                    answer += chunk
    except (OSError, ssl.SSLError) as exc:
        return f"failed: {exc!r}"
    if not answer.startswith(b"HTTP/1.1 200"):
        return f"answered {answer[:60]!r}"
    return time.perf_counter() - began


def still_open(sockets: list[socket.socket]) -> int:
    """How many connections the proxy has not closed (no EOF or reset waiting on them)."""
    open_count = 0
    for sock in sockets:
        sock.setblocking(False)
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            open_count += 1
            continue
        try:
            while data := sock.recv(65536):
                del data  # the proxy's ServerHello and certificate: still open
            # recv returned b"": EOF, closed by the proxy
        except BlockingIOError:
            open_count += 1
        except OSError:
            pass  # reset
    return open_count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--mode", choices=("half", "idle"), default="half")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--upstream", default="unix:///var/run/docker.sock")
    parser.add_argument(
        "--source",
        action="append",
        help="the flood's source address, repeatable (default 127.0.0.2; the real client's is 127.0.0.1: the proxy "
        "bounds each peer apart)",
    )
    parser.add_argument("--json", type=Path, help="write the results there too")
    args = parser.parse_args()
    sources = args.source or ["127.0.0.2"]

    work = Path(tempfile.mkdtemp(prefix="bench-proxy-connections-"))
    certs = work / "certs"
    subprocess.run(["bash", str(SCRIPT), str(certs), "bench"], check=True, capture_output=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sock_path = work / "proxy.sock"
    env = {**os.environ, **dict(item.split("=", 1) for item in args.env)}
    env["PYTHONPATH"] = f"{ROOT / 'src'}:{env.get('PYTHONPATH', '')}"
    log = (work / "proxy.log").open("wb")
    command = [
        sys.executable, "-m", "dood.proxy",
        "--listen", f"unix://{sock_path}",
        "--tls-listen", f"tcp://127.0.0.1:{port}",
        "--tls-cert", str(certs / "bench" / "server-cert.pem"),
        "--tls-key", str(certs / "bench" / "server-key.pem"),
        "--tls-ca-cert", str(certs / "ca.pem"),
        "--upstream", args.upstream,
        "--stack", "bench-connections",
        "--log-level", "WARNING",
    ]  # fmt: skip
    proxy = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    sockets: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 30
        while isinstance(ping := ping_seconds(port, certs), str):
            if proxy.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"dood-proxy did not serve: {ping}; {(work / 'proxy.log').read_text()}")
            time.sleep(0.1)
        at_rest = settle(proxy.pid)

        hello = client_hello(certs) if args.mode == "half" else b""
        began = time.monotonic()
        failed = 0
        for index in range(args.connections):
            sock = socket.socket()
            sock.settimeout(10)
            try:
                sock.bind((sources[index % len(sources)], 0))
                sock.connect(("127.0.0.1", port))
                if hello:
                    sock.sendall(hello)
            except OSError:
                failed += 1
                sock.close()
                continue
            sockets.append(sock)
        opened_in = time.monotonic() - began
        peak = settle(proxy.pid, steady_seconds=1.0)
        held_at_peak = still_open(sockets)
        served_during = ping_seconds(port, certs)
        # 8 s after the last one opened: past the handshake deadline (5 s) of those the proxy still holds
        time.sleep(max(0.0, 8 - (time.monotonic() - began - opened_in)))
        held_later = still_open(sockets)
        under_load = settle(proxy.pid, steady_seconds=1.0)
        for sock in sockets:
            sock.close()
        sockets.clear()
        after_close = settle(proxy.pid)
        served_after = ping_seconds(port, certs)
        results = {
            "connections": args.connections,
            "sources": sources,
            "mode": args.mode,
            "env": args.env,
            "python": sys.version.split()[0],
            "rss_mb_at_rest": round(at_rest, 1),
            "rss_mb_with_connections": round(peak, 1),
            "rss_mb_8s_later": round(under_load, 1),
            "rss_mb_after_close": round(after_close, 1),
            "kb_per_connection": round((peak - at_rest) * 1024 / max(1, args.connections), 1),
            "connect_or_send_failed": failed,
            "seconds_to_open": round(opened_in, 2),
            "held_by_proxy_at_peak": held_at_peak,
            "held_by_proxy_after_8s": held_later,
            "ping_during_s": served_during if isinstance(served_during, str) else round(served_during, 3),
            "ping_after_s": served_after if isinstance(served_after, str) else round(served_after, 3),
        }
    finally:
        for sock in sockets:
            sock.close()
        proxy.terminate()
        proxy.wait(timeout=30)
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
