"""A real dood-proxy process on a temporary unix socket, for the integration tests that attack it."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest


@contextlib.contextmanager
def running_proxy(root: Path, policy_yaml: str, *extra_args: str) -> Iterator[SimpleNamespace]:
    """Start `python -m dood.proxy` with `policy_yaml` as its config's `policy:` section; stop it after."""
    config = root / "dood.yaml"
    config.write_text("policy:\n" + policy_yaml)
    sock = root / "proxy.sock"
    log_path = root / "proxy.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "dood.proxy", "--listen", f"unix://{sock}", "--config", str(config), *extra_args],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while not sock.exists():
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"dood-proxy did not start: {log_path.read_text()}")
                time.sleep(0.05)
            yield SimpleNamespace(socket=str(sock), url=f"unix://{sock}", log=log_path, root=root)
        finally:
            process.terminate()
            process.wait(timeout=10)


def remove_labelled(docker_api, label: str) -> None:
    """Remove every container carrying `label` (`key=value`), on the raw socket: a test's own leftovers."""
    for container in docker_api.containers(all=True, filters={"label": label}):
        docker_api.remove_container(container["Id"], force=True)
