"""Local TCP ports for the processes the tests and benchmarks start (stacks, TLS listeners): 127.0.0.1 only."""

from __future__ import annotations

import socket
import time
from pathlib import Path


def free_port() -> int:
    """A port nothing listens on now (the kernel's pick), for a process about to listen on it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, log: Path | None = None, seconds: float = 30) -> None:
    """Return once something accepts connections on the port; fail with the listener's log after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                said = log.read_text(errors="replace") if log is not None and log.exists() else "(no log)"
                raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {seconds}s: {said}") from None
            time.sleep(0.05)
