"""A flood of idle connections, as a process of its own (stdlib only): it holds `--per-source` connections that
never send anything, from each `--source` address (TCP) or from this process (a unix socket), and reopens each
one as soon as the server closes it, until `--seconds` have passed or SIGTERM. Then it prints, as JSON, how
many it opened, how many the server closed (EOF or reset), and how many connects failed.

    python tests/integration/flooder.py --unix PATH --per-source 200 --seconds 30
    python tests/integration/flooder.py --tcp 127.0.0.1:PORT --source 127.0.0.2 --source 127.0.0.3 --per-source 64
"""

from __future__ import annotations

import argparse
import json
import selectors
import signal
import socket
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--unix", help="the socket's path")
    target.add_argument("--tcp", help="HOST:PORT")
    parser.add_argument("--source", action="append", default=[], help="a source address (TCP); repeatable")
    parser.add_argument("--per-source", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()

    if args.unix:
        family, address, sources = socket.AF_UNIX, args.unix, [None]
    else:
        host, port = args.tcp.rsplit(":", 1)
        family, address, sources = socket.AF_INET, (host, int(port)), args.source or [None]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    stats = {"opened": 0, "closed_by_server": 0, "connect_failed": 0, "held_at_end": 0}
    missing = {source: args.per_source for source in sources}
    selector = selectors.DefaultSelector()
    deadline = time.monotonic() + args.seconds
    print(json.dumps({"started": True}), flush=True)
    while not stopping and time.monotonic() < deadline:
        failed = False
        for source, count in missing.items():
            while count and not failed:
                sock = socket.socket(family)
                sock.setblocking(False)
                try:
                    if source is not None:
                        sock.bind((source, 0))
                    sock.connect(address)
                except (BlockingIOError, InterruptedError) as exc:
                    if family == socket.AF_UNIX:  # EAGAIN: the backlog is full; try again in a moment
                        sock.close()
                        stats["connect_failed"] += 1
                        failed = True
                        continue
                    del exc  # EINPROGRESS: a TCP connect under way
                except OSError:
                    sock.close()
                    stats["connect_failed"] += 1
                    failed = True
                    continue
                selector.register(sock, selectors.EVENT_READ, source)
                stats["opened"] += 1
                count -= 1
            missing[source] = count
        for key, _ in selector.select(timeout=0.01 if failed else 0.05):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""  # a reset, or a refused connect
            if data:
                continue  # the server spoke (a TLS server does not, before a ClientHello): still open
            selector.unregister(sock)
            sock.close()
            stats["closed_by_server"] += 1
            missing[key.data] += 1
    stats["held_at_end"] = len(selector.get_map())
    for key in list(selector.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    sys.exit(main())
