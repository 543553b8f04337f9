"""A real dood-proxy process on a temporary unix socket, for the integration tests that attack it."""

from __future__ import annotations

import contextlib
import grp
import http.client
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

#: The uid dood-proxy runs as in the compose stack (DOOD_PROXY_UID), and its primary group there.
PROXY_UID = 50001
PROXY_GID = 0
_SRC = Path(__file__).resolve().parents[2] / "src"


def as_proxy_user(
    command: list[str], uid: int = PROXY_UID, extra_groups: tuple[int, ...] = ()
) -> tuple[list[str], dict[str, str]]:
    """`command` (a `python -m ...` list) run as `uid` with the Docker socket's group, as compose runs the proxy.

    The venv's interpreter may live under /root (0700), which another uid cannot execute: Debian's
    /usr/bin/python3 (same minor version) runs it with the venv's site-packages on PYTHONPATH."""
    socket_gid = os.stat("/var/run/docker.sock").st_gid
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    env = {**os.environ, "PYTHONPATH": f"{_SRC}:{sysconfig.get_paths()['purelib']}", "HOME": "/tmp"}
    wrapped = [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={PROXY_GID}",
        f"--groups={','.join(map(str, (socket_gid, *extra_groups)))}",
        "--inh-caps=-all",
        "--bounding-set=-all",
        python,
        *command[1:],
    ]
    return wrapped, env


def socket_group_name() -> str:
    return grp.getgrgid(os.stat("/var/run/docker.sock").st_gid).gr_name


@contextlib.contextmanager
def reachable_tmp(name: str) -> Iterator[Path]:
    """A temporary directory other uids can pass through (mode 0755 below /tmp), removed after: pytest's own
    base folder is 0700, and every new pytest session on the machine makes it so again."""
    path = Path(tempfile.mkdtemp(prefix=f"dood-{name}-", dir="/tmp"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def traversable(path: Path) -> None:
    """Let other uids pass through `path`'s directories (pytest's base folder is 0700): search only, no write."""
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if mode & 0o055 != 0o055:  # the proxy's group is 0 (as in compose): group bits count for it
            os.chmod(directory, (mode & 0o7777) | 0o055)


@contextlib.contextmanager
def running_proxy(
    root: Path, policy_yaml: str, *extra_args: str, uid: int | None = None, extra_groups: tuple[int, ...] = ()
) -> Iterator[SimpleNamespace]:
    """Start `python -m dood.proxy` with `policy_yaml` as its config's `policy:` section; stop it after.

    With `uid` (e.g. `PROXY_UID`), the proxy runs as that non-root uid with the socket's group, as in the
    compose stack (`extra_groups`: more supplementary groups); `root` must then be reachable by it (the caller
    chowns what the proxy must own)."""
    config = root / "dood.yaml"
    config.write_text("policy:\n" + policy_yaml)
    sock = root / "proxy.sock"
    log_path = root / "proxy.log"
    command = [sys.executable, "-m", "dood.proxy", "--listen", f"unix://{sock}", "--config", str(config), *extra_args]
    env = None
    if uid is not None:
        traversable(root)
        os.chown(root, uid, PROXY_GID)  # its socket and log live here
        command, env = as_proxy_user(command, uid, extra_groups)
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 30
            while not sock.exists():
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"dood-proxy did not start: {log_path.read_text()}")
                time.sleep(0.05)
            yield SimpleNamespace(socket=str(sock), url=f"unix://{sock}", log=log_path, root=root, process=process)
        finally:
            process.terminate()
            process.wait(timeout=10)


class UnixHTTPConnection(http.client.HTTPConnection):
    """Raw HTTP over a unix socket (requests the docker SDK would not send)."""

    def __init__(self, path: str, timeout: float = 30) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def remove_labelled(docker_api, label: str) -> None:
    """Remove every container carrying `label` (`key=value`), on the raw socket: a test's own leftovers."""
    for container in docker_api.containers(all=True, filters={"label": label}):
        docker_api.remove_container(container["Id"], force=True)
