"""A compose stack of its own for the team-sharing tests (issue 21.4): project `dood-teams`, its own port, data
root and env file, set up by scripts/compose-setup.sh like the quickstart, always `down -v` afterwards.

Unlike tests/e2e/conftest.py's `stack`, the settings are the test's (extra users, the auth manager, the image),
and `compose()` may be called again (`up -d` a second time is part of what is tested). Run under
`flock /tmp/dood-compose.lock`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.e2e.conftest import REPO, STATE, compose_command, log, read_env_file, run_script, wait_for
from tests.ports import free_port

PROJECT = "dood-teams"
ADMIN = "airflow"
HEALTHY = ("postgres", "dood-proxy", "dood-proxy-ro", "airflow-apiserver", "airflow-scheduler", "airflow-triggerer")


@dataclass
class TeamStack:
    settings: dict[str, str]
    env_file: Path
    root: Path
    api_url: str
    password: str
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def set_up(cls, **extra: str) -> TeamStack:
        root = STATE / f"teams-{os.getpid()}"
        host_root = root / "dood"
        host_root.mkdir(parents=True, exist_ok=True)
        port, password = free_port(), secrets.token_urlsafe(12)
        ours = {
            "DOOD_HOST_ROOT": str(host_root),
            "AIRFLOW_API_PORT": str(port),
            "DOOD_STACK": PROJECT,
            "_AIRFLOW_WWW_USER_USERNAME": ADMIN,
            "_AIRFLOW_WWW_USER_PASSWORD": password,
            **extra,
        }
        env_file = root / "compose.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in ours.items()))
        run_script("compose-setup.sh", env={"DOOD_ENV_FILE": str(env_file)})
        settings = read_env_file(env_file)
        for key, value in extra.items():  # compose-setup.sh refreshes the image names: ours win again
            if settings.get(key) != value:
                lines = [line for line in env_file.read_text().splitlines() if not line.startswith(f"{key}=")]
                env_file.write_text("\n".join([*lines, f"{key}={value}"]) + "\n")
        settings = read_env_file(env_file)
        env = {k: v for k, v in os.environ.items() if k not in settings}
        return cls(settings, env_file, root, f"http://127.0.0.1:{port}", password, env)

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [
            *compose_command(),
            "-p",
            PROJECT,
            "-f",
            str(REPO / "docker-compose.yml"),
            "--env-file",
            str(self.env_file),
        ]
        done = subprocess.run([*cmd, *args], cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"compose {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done

    def states(self) -> dict[str, str]:
        out = self.compose("ps", "-a", check=False).stdout
        ids = self.compose("ps", "-a", "-q", check=False).stdout.split()
        found = {}
        for cid in ids:
            fmt = (
                '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} '
                "{{if .State.Health}}{{.State.Health.Status}}{{end}} {{.State.ExitCode}}"
            )
            line = subprocess.run(["docker", "inspect", "-f", fmt, cid], capture_output=True, text=True).stdout.split()
            if line:
                found[line[0]] = "/".join(line[1:])
        return found or {"(none)": out}

    def up(self) -> None:
        started = time.monotonic()
        self.compose("up", "-d", timeout=900)
        wait_for(
            "the stack healthy (" + ", ".join(HEALTHY) + ") and airflow-init exited 0",
            lambda: (
                all(self.states().get(s, "").startswith("running/healthy") for s in HEALTHY)
                and self.states().get("airflow-init") == "exited/0"
            ),
            timeout=480,
            interval=3,
            describe=lambda: f"services: {self.states()}",
        )
        log(f"dood-teams healthy in {time.monotonic() - started:.0f}s on {self.api_url}")

    def service(self, name: str) -> str:
        [cid] = self.compose("ps", "-q", name).stdout.split()
        return cid

    def inspect(self, service: str, template: str) -> str:
        done = subprocess.run(
            ["docker", "inspect", "-f", template, self.service(service)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def exec(self, service: str, *cmd: str, user: str | None = None) -> str:
        args = ["docker", "exec", *(["-u", user] if user else []), self.service(service), *cmd]
        done = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (
            f"{' '.join(cmd)} in {service} failed: {done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        )
        return done.stdout

    def token(self, username: str, password: str) -> requests.Response:
        return requests.post(
            f"{self.api_url}/auth/token", json={"username": username, "password": password}, timeout=60
        )

    def api(self, token: str, method: str, path: str, **kwargs):
        response = requests.request(
            method, f"{self.api_url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=60, **kwargs
        )
        return response

    def down(self, failed: bool) -> None:
        if failed:
            logs = self.compose("logs", "--no-color", "--tail=200", check=False, timeout=120)
            (self.root / "compose.log").write_text(logs.stdout + logs.stderr)
            log(f"compose logs kept in {self.root / 'compose.log'}")
        self.compose("down", "-v", "--remove-orphans", "--timeout", "20", check=False, timeout=300)
        subprocess.run(
            ["sh", "-c", f"docker ps -aq --filter label=dood.stack={PROJECT} | xargs -r docker rm -f"],
            capture_output=True,
        )
        if not failed:
            shutil.rmtree(self.root, ignore_errors=True)
