"""A real MLflow tracking server for the tests: `mlflow server` from the venv, its store a SQLite file, its
artifacts served by itself (`--serve-artifacts`), on a free port of one local address; waited for by /health."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

MLFLOW = Path(sys.executable).with_name("mlflow")


def free_port_on(address: str) -> int:
    """A port nothing listens on now at `address` (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(root: Path, address: str = "127.0.0.1", seconds: float = 120) -> Iterator[str]:
    """Run the server until the block ends; yields its URL (http://address:port)."""
    if not MLFLOW.exists():
        raise AssertionError(f"{MLFLOW} is missing: pip install -e '.[test]' (the test extra has mlflow)")
    root.mkdir(parents=True, exist_ok=True)
    port = free_port_on(address)
    url = f"http://{address}:{port}"
    log = root / "server.log"
    command = [
        str(MLFLOW),
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--serve-artifacts",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        address,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with log.open("wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=root)
    try:
        deadline = time.monotonic() + seconds
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:  # noqa: S310 - our own server
                    if answer.read().strip() == b"OK":
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"MLflow server at {url} did not answer /health with OK within {seconds}s "
                    f"(exit code {server.poll()}): {log.read_text(errors='replace')[-3000:]}"
                )
            time.sleep(0.2)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)  # its own session: the server and its workers
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
