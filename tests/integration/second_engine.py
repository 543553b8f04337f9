"""A second Docker engine of the tests' own, with a fake NVIDIA hook: real GPU requests without a GPU.

dockerd 20.10 registers its nvidia device driver when an executable named `nvidia-container-runtime-hook`
is on its PATH at start. Ours reads the OCI bundle's `config.json`, records the `NVIDIA_VISIBLE_DEVICES`
the engine chose into `<records>/<container id>`, and gives nothing: the engine accepts `DeviceRequests`,
runs the container, and the record shows which GPUs it was given (`Count: 1` records `0`).

The engine has its own data root, exec root, pidfile, unix socket and a bridge of its own made with
`ip link`; never `--bridge none`, which deletes `docker0`, the main engine's default bridge
(../shared/ENVIRONMENT.md). It is stopped by the pid in its pidfile, never by name.

Restarts (tests/integration/test_daemon_restart.py): `start(live_restore=True)` passes `--live-restore`, so
the containers outlive the daemon (under its containerd, which it leaves running); `restart()` stops the
daemon by its pidfile's pid and starts it again on the same paths and flags. Without live-restore, the
daemon's shutdown stops every container (SIGTERM, `shutdown_timeout`, SIGKILL).

User namespaces (tests/integration/test_userns.py): `userns_remap="default"` passes `--userns-remap=default`;
dockerd then makes the user `dockremap` and its /etc/subuid, /etc/subgid ranges (kept after the session, as
dockerd leaves them), and keeps its images and containers under `<data root>/<uid>.<gid>`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import docker

HOOK_NAME = "nvidia-container-runtime-hook"
MAIN_ENGINE = "unix:///var/run/docker.sock"

_HOOK = '''#!{python} -I
"""Fake NVIDIA prestart hook (tests only): records the GPUs the engine chose; gives none."""
import json, os, sys

state = json.load(sys.stdin)
with open(os.path.join(state["bundle"], "config.json")) as config:
    env = dict(e.split("=", 1) for e in json.load(config).get("process", {{}}).get("env", []) if "=" in e)
record = os.path.join({records!r}, state["id"])
with open(record + ".tmp", "w") as out:
    out.write(env.get("NVIDIA_VISIBLE_DEVICES", ""))
os.replace(record + ".tmp", record)
'''


@dataclass(frozen=True)
class SecondEngine:
    """Paths and addresses of one test engine; `start()` brings it up, `stop()` removes every trace."""

    name: str
    bridge: str
    gateway: str  # the bridge's address, with its prefix length
    live_restore: bool = False  # containers survive a daemon restart (dockerd --live-restore)
    shutdown_timeout: int | None = None  # dockerd --shutdown-timeout: SIGTERM -> SIGKILL on the daemon's shutdown
    userns_remap: str | None = None  # dockerd --userns-remap ("default": the user dockremap, made by dockerd)

    @classmethod
    def for_session(cls, role: str = "gpu", subnet: int = 214, **options) -> SecondEngine:
        """Names of this test process's own (so parallel sessions never meet), one set per `role` (and its
        own /24 in 10.`subnet`.x); an interface name has <= 15 chars."""
        pid = os.getpid()
        return cls(
            name=f"dood-{role}-{pid}",
            bridge=f"br-d{role[0]}{pid}"[:15],
            gateway=f"10.{subnet}.{pid % 250 + 1}.1/24",
            **options,
        )

    @property
    def run_dir(self) -> Path:
        return Path("/run") / self.name

    @property
    def data_root(self) -> Path:
        return Path("/var/lib") / self.name

    @property
    def hook_dir(self) -> Path:
        return self.run_dir / "hook"

    @property
    def records(self) -> Path:
        """One file per container the hook saw, named by container id, holding NVIDIA_VISIBLE_DEVICES."""
        return self.run_dir / "records"

    @property
    def socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "docker.pid"

    @property
    def log(self) -> Path:
        return self.run_dir / "dockerd.log"

    def api(self, timeout: int = 60) -> docker.APIClient:
        return docker.APIClient(base_url=self.url, version="auto", timeout=timeout)

    # --- life ---

    def start(self, timeout: float = 30) -> None:
        """Bridge, fake hook, dockerd; returns once the engine answers."""
        for directory in (self.hook_dir, self.records):
            directory.mkdir(parents=True, exist_ok=True)
        hook = self.hook_dir / HOOK_NAME
        hook.write_text(_HOOK.format(python=os.path.realpath(sys.executable), records=str(self.records)))
        hook.chmod(0o755)
        if not (self.live_restore and Path(f"/sys/class/net/{self.bridge}").exists()):  # live containers use it
            self._ip("link", "del", self.bridge, check=False)  # a crashed earlier session of this pid's; not docker0
            self._ip("link", "add", self.bridge, "type", "bridge")
            self._ip("addr", "add", self.gateway, "dev", self.bridge)
            self._ip("link", "set", self.bridge, "up")
        env = {**os.environ, "PATH": f"{self.hook_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"}
        command = [
            "dockerd",
            "--host", self.url,
            "--data-root", str(self.data_root),
            "--exec-root", str(self.run_dir / "exec"),
            "--pidfile", str(self.pidfile),
            "--bridge", self.bridge,  # its own; never "none" (that deletes docker0)
            "--iptables=false",
            *(["--live-restore"] if self.live_restore else []),
            *(["--shutdown-timeout", str(self.shutdown_timeout)] if self.shutdown_timeout is not None else []),
            *(["--userns-remap", self.userns_remap] if self.userns_remap is not None else []),
        ]  # fmt: skip
        with self.log.open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.api(timeout=2).ping()
                return
            except docker.errors.DockerException:
                if process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the second dockerd did not start; its log:\n{self._log_tail()}") from None
                time.sleep(0.1)

    def restart(self, timeout: float = 30) -> None:
        """Stop the daemon by its pidfile's pid and start it again on the same data root. Without live-restore
        its containers die with it; with it they keep running, and so do its bridge and exec root."""
        self._stop_daemon()
        if not self.live_restore:
            shutil.rmtree(self.run_dir / "exec", ignore_errors=True)
            self._ip("link", "del", self.bridge, check=False)
        self.start(timeout)

    def stop(self) -> None:
        """Remove its containers, stop the daemon by its pidfile's pid (and the containerd it leaves running
        with live-restore), then remove its bridge and directories."""
        if self.live_restore and self.pidfile.exists():
            try:
                api = self.api(timeout=30)
                for container in api.containers(all=True):
                    api.remove_container(container["Id"], force=True)
            except docker.errors.DockerException:
                pass
        self._stop_daemon()
        containerd = self.run_dir / "exec" / "containerd"
        self._stop_pidfile(containerd / "containerd.pid", must_mention=str(containerd))
        self._ip("link", "del", self.bridge, check=False)
        for directory in (self.data_root, self.run_dir):
            if directory.exists():
                subprocess.run(["umount", "-R", "-l", str(directory / "exec")], capture_output=True, check=False)
                shutil.rmtree(directory, ignore_errors=True)

    def load_image(self, image: str, source: str = MAIN_ENGINE) -> None:
        """`docker save` from the main engine piped into `docker load` here (no registry needed)."""
        source_api = docker.APIClient(base_url=source, version="auto", timeout=120)
        self.api(timeout=120).load_image(source_api.get_image(image))

    # --- what the hook saw ---

    def gpus_given(self, container_id: str, wait_seconds: float = 5) -> tuple[str, ...]:
        """The GPUs the engine gave this container (recorded by the fake hook when it started)."""
        record = self.records / container_id
        deadline = time.monotonic() + wait_seconds
        while not record.exists():
            if time.monotonic() > deadline:
                raise AssertionError(f"the fake hook recorded nothing for {container_id[:12]}")
            time.sleep(0.02)
        return tuple(part for part in record.read_text().split(",") if part)

    # --- helpers ---

    def _stop_daemon(self, timeout: float = 30) -> None:
        self._stop_pidfile(self.pidfile, timeout)
        # dockerd reaps the containerd it started itself; give it a moment after dockerd's own exit
        time.sleep(0.2)

    @staticmethod
    def _stop_pidfile(pidfile: Path, timeout: float = 30, must_mention: str | None = None) -> None:
        """SIGTERM (SIGKILL after `timeout`) the pid in `pidfile`; with `must_mention`, only if its command line
        names that (a stale pidfile's pid may be someone else's by now)."""
        try:
            pid = int(pidfile.read_text().strip())
            if must_mention and must_mention not in Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " "):
                return
        except (FileNotFoundError, ValueError):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while _alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.1)

    def _ip(self, *args: str, check: bool = True) -> None:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")

    def _log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (our own child, not yet reaped) counts as ended
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
