"""E2E fixtures: the docker-compose stack of docker-compose.yml, up once per session, always torn down.

Opt-in (it builds images and runs Airflow in containers for a few minutes): runs with DOOD_E2E=1, as
scripts/compose-e2e.sh sets, or when `-m e2e` is given; otherwise the tests are skipped.
DOOD_E2E_EXECUTOR=celery runs the same tests on the `celery` profile (CeleryExecutor, redis, a worker).
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import stat
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
from docker.errors import DockerException, ImageNotFound, NotFound

from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
PROJECT = os.environ.get("DOOD_E2E_PROJECT", "dood-e2e")
STATE = REPO / "var" / "compose"
ML_IMAGE = os.environ.get("DOOD_ML_IMAGE", "dood-ml-example") + ":" + os.environ.get("DOOD_ML_IMAGE_TAG", "latest")
EXECUTOR = os.environ.get("DOOD_E2E_EXECUTOR", "local")  # local | celery
HEALTHY_SERVICES = (
    "postgres",
    "dood-proxy",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
) + (("redis", "airflow-worker") if EXECUTOR == "celery" else ())
TASK_RUNNER = "airflow-worker" if EXECUTOR == "celery" else "airflow-scheduler"  # where the tasks run
USERNAME = "airflow"
API_SERVER = "airflow-apiserver"
#: A REST call waits as long as the api-server's container runs (a loaded machine answers slowly, not
#: never); this bounds only a call the running api-server never answers.
REST_CEILING_SECONDS = 900
#: A wait with progress (`wait_for(progress=...)`) fails after this long without any, not after a fixed total.
STALL_SECONDS = 300
SESSION_MODULES = ("test_compose.py", "test_mlflow.py")  # the tests on the session's stack (`stack` fixture)
DOWN_TEST = "test_down_leaves_no_container_network_volume_or_launched_step"  # takes that stack down


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: brings up the docker-compose stack (scripts/compose-e2e.sh)")


def pytest_collection_modifyitems(config, items):
    wanted = os.environ.get("DOOD_E2E") == "1" or "e2e" in (config.getoption("-m") or "")
    skip = pytest.mark.skip(reason="e2e: set DOOD_E2E=1 or run scripts/compose-e2e.sh (brings up the compose stack)")
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
            if not wanted:
                item.add_marker(skip)

    # The modules on the session's stack first, its teardown test last among them (test_compose.py's down test
    # would otherwise take the stack down before test_mlflow.py runs); the stacks of their own after them.
    def group(item: pytest.Item) -> int:
        if item.path.name in SESSION_MODULES:
            return 1 if item.name == DOWN_TEST else 0
        return 2

    items.sort(key=group)  # stable: each group keeps its order


def log(message: str) -> None:
    print(f"e2e: {message}", flush=True)


def compose_command() -> list[str]:
    """`docker-compose` (v1, as on this project's CI) or `docker compose` (v2); $DOOD_COMPOSE overrides."""
    if os.environ.get("DOOD_COMPOSE"):
        return shlex.split(os.environ["DOOD_COMPOSE"])
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    pytest.fail("Neither docker-compose nor `docker compose` is installed: apt-get install docker-compose")


def read_env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


class LaunchRecorder:
    """Records every container our stack launches (docker events `create`, filtered by our label) with its
    mounts, inspected at once: the steps are removed after they end, so this is the only way to see them."""

    def __init__(self, client: docker.DockerClient, stack_label: str) -> None:
        self.launched: list[dict[str, Any]] = []
        self._api = client.api
        self._events = client.api.events(
            decode=True, filters={"type": "container", "event": "create", "label": [stack_label]}
        )
        self._thread = threading.Thread(target=self._run, name="dood-e2e-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self._events:
                record = {"id": event["id"], "labels": event.get("Actor", {}).get("Attributes", {})}
                try:
                    found = self._api.inspect_container(event["id"])
                    record.update(
                        name=found["Name"].lstrip("/"), mounts=found["Mounts"], labels=found["Config"]["Labels"]
                    )
                except NotFound:
                    record["mounts"] = None  # already gone: reported by the test
                self.launched.append(record)
        except Exception:  # noqa: BLE001 - the stream is closed at teardown
            pass

    def close(self) -> None:
        self._events.close()


@dataclass
class Stack:
    """The running stack: compose runner, API access, the host data root and what was launched."""

    compose_cmd: list[str]
    env_file: Path
    settings: dict[str, str]
    env: dict[str, str]
    host_root: Path
    api_url: str
    password: str
    recorder: LaunchRecorder
    client: docker.DockerClient
    diagnostics_dir: Path
    state: dict[str, Any] = field(default_factory=dict)
    _token: str | None = None
    _down: bool = False

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        profile = ["--profile", "celery"] if EXECUTOR == "celery" else []
        cmd = [
            *self.compose_cmd,
            "-p",
            PROJECT,
            "-f",
            str(REPO / "docker-compose.yml"),
            "--env-file",
            str(self.env_file),
            *profile,
            *args,
        ]
        result = subprocess.run(cmd, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(
                f"{shlex.join(cmd)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    # --- REST API (Airflow 3 public API, JWT from the simple auth manager's /auth/token) ---

    def token(self) -> str:
        if self._token is None:
            response = self._rest("POST", "/auth/token", json={"username": USERNAME, "password": self.password})
            assert response.status_code == 201, f"/auth/token: {response.status_code} {response.text[:500]}"
            self._token = response.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._rest(method, f"/api/v2{path}", headers={"Authorization": f"Bearer {self.token()}"}, **kwargs)
        if response.status_code >= 400:
            raise AssertionError(f"{method} /api/v2{path}: {response.status_code} {response.text[:1000]}")
        return response.json()

    def api_raw(self, method: str, path: str, **kwargs: Any) -> Any:
        """A plugin endpoint (e.g. /dood/api/containers), as a signed-in user: JSON."""
        response = self._rest(method, path, headers={"Authorization": f"Bearer {self.token()}"}, **kwargs)
        if response.status_code >= 400:
            raise AssertionError(f"{method} {path}: {response.status_code} {response.text[:1000]}")
        return response.json()

    def _rest(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One request to the api-server, answered however slowly while its container runs: the call is made
        once (a POST is never sent twice) and waited for while `airflow-apiserver` is running; it fails, saying
        so, when the api-server stops running, or after REST_CEILING_SECONDS of a running api-server's silence."""
        done: dict[str, Any] = {}
        finished = threading.Event()

        def call() -> None:
            try:
                done["response"] = requests.request(
                    method, f"{self.api_url}{path}", timeout=(10, REST_CEILING_SECONDS), **kwargs
                )
            except requests.RequestException as exc:
                done["error"] = exc
            finally:
                finished.set()

        threading.Thread(target=call, name=f"rest {method} {path}", daemon=True).start()
        started = time.monotonic()
        seen: list[str] = []
        while not finished.wait(5):
            state = self.service_states().get(API_SERVER, "gone")
            if not seen or seen[-1] != state:
                seen.append(state)
            waited = time.monotonic() - started
            if not state.startswith("running"):
                raise AssertionError(
                    f"{method} {path}: no answer after {waited:.0f}s; the api-server stopped running meanwhile "
                    f"(its states: {' -> '.join(seen)})"
                )
        if "error" in done:
            raise AssertionError(
                f"{method} {path}: {done['error']!r} after {time.monotonic() - started:.0f}s "
                f"(the api-server's states meanwhile: {' -> '.join(seen) or 'not asked'}, now "
                f"{self.service_states().get(API_SERVER, 'gone')})"
            )
        return done["response"]

    # --- state of the project's containers ---

    def containers(self, **filters: Any) -> list:
        return self.client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={PROJECT}", **filters}
        )

    def service_states(self) -> dict[str, str]:
        states = {}
        for container in self.containers():
            service = container.labels.get("com.docker.compose.service", "?")
            health = (container.attrs["State"].get("Health") or {}).get("Status")
            states[service] = f"{container.status}/{health}" if health else container.status
        return states

    def service_container(self, service: str):
        [container] = self.containers(
            label=[f"com.docker.compose.project={PROJECT}", f"com.docker.compose.service={service}"]
        )
        return container

    def save_diagnostics(self) -> None:
        """Compose logs and Airflow's task logs into diagnostics_dir (before `down -v` deletes them)."""
        self.diagnostics_dir.mkdir(parents=True, exist_ok=True)
        logs = self.compose("logs", "--no-color", "--tail=300", check=False, timeout=120)
        (self.diagnostics_dir / "compose.log").write_text(logs.stdout + logs.stderr)
        try:
            scheduler = self.service_container("airflow-scheduler")
            subprocess.run(
                ["docker", "cp", f"{scheduler.id}:/opt/airflow/logs", str(self.diagnostics_dir / "airflow-logs")],
                capture_output=True,
                timeout=120,
            )
        except (ValueError, subprocess.SubprocessError):
            pass
        log(f"diagnostics (compose logs, task logs) kept in {self.diagnostics_dir}")

    def down(self, *, failed: bool = False) -> None:
        if self._down:
            return
        if failed:
            self.save_diagnostics()
        started = time.monotonic()
        self.compose("down", "-v", "--remove-orphans", "--timeout", "30", check=False, timeout=300)
        self._down = True
        log(f"stack down in {time.monotonic() - started:.0f}s")


def wait_for(what: str, check, timeout: float, interval: float = 2.0, describe=lambda: "", progress=None):
    """Wait until `check()` is true. With `progress` (a snapshot of what is being waited for, e.g. task
    states), `timeout` is how long a wait may go on *without any change* in it, so a slow machine that moves
    on is waited for and a stuck one fails; the failure says what was waited for and the last state seen."""
    started = time.monotonic()
    deadline = started + timeout
    last = progress() if progress else None
    while True:
        value = check()
        if value:
            return value
        if progress is not None:
            now = progress()
            if now != last:
                last, deadline = now, time.monotonic() + timeout
        if time.monotonic() > deadline:
            stalled = f" (no change in the last {timeout:.0f}s; last seen: {last})" if progress else ""
            raise AssertionError(
                f"timed out after {time.monotonic() - started:.0f}s waiting for {what}{stalled}. {describe()}"
            )
        time.sleep(interval)


def run_script(name: str, *args: str, env: dict[str, str] | None = None) -> None:
    """One of scripts/ as a user runs it; its output shown, its failure the test's."""
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / name), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, **(env or {})},
    )
    print(done.stdout, end="")
    assert done.returncode == 0, f"scripts/{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"


@pytest.fixture(scope="session")
def stack(request):
    """Build the images, bring the stack up (`up -d`), wait until healthy; always `down -v --remove-orphans`."""
    try:
        client = docker.from_env()
        client.ping()
    except DockerException as exc:
        pytest.fail(f"No Docker engine answers ({exc}). Start one: bash scripts/ensure-docker.sh")
    try:
        client.images.get(ML_IMAGE)
    except ImageNotFound:
        pytest.fail(f"{ML_IMAGE} is missing. Build it: bash scripts/build-images.sh ml")
    assert EXECUTOR in ("local", "celery"), f"DOOD_E2E_EXECUTOR must be local or celery, not {EXECUTOR!r}"
    compose_cmd = compose_command()

    started = time.monotonic()
    if EXECUTOR == "celery":  # before compose-setup: it copies every image name build-compose-images wrote
        run_script("build-compose-images.sh", "redis")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    host_root = Path(os.environ.get("DOOD_E2E_HOST_ROOT") or STATE / f"e2e-{stamp}" / "dood").resolve()
    host_root.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(12)
    port = free_port()
    # The quickstart's one step, as a user runs it (scripts/compose-setup.sh), into an env file of the test's
    # own: it keeps what is there (our root, port, stack, login) and adds the socket's group and the images.
    ours = {
        "DOOD_HOST_ROOT": str(host_root),  # not /opt/dood: host and container paths differ on purpose
        "AIRFLOW_API_PORT": str(port),
        "DOOD_STACK": PROJECT,
        "_AIRFLOW_WWW_USER_USERNAME": USERNAME,
        "_AIRFLOW_WWW_USER_PASSWORD": password,
    }
    if EXECUTOR == "celery":
        ours["AIRFLOW_EXECUTOR"] = "CeleryExecutor"
    env_file = host_root.parent / "compose.env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in ours.items()))
    run_script("compose-setup.sh", env={"DOOD_ENV_FILE": str(env_file)})
    settings = read_env_file(env_file)
    assert {k: settings.get(k) for k in ours} == ours, f"compose-setup.sh changed the values it must keep: {settings}"
    missing = [k for k in ("DOCKER_GID", "AIRFLOW_IMAGE", "POSTGRES_IMAGE") if not settings.get(k)]
    assert not missing, f"compose-setup.sh did not write {missing} into {env_file}"
    socket = settings.get("DOOD_DOCKER_SOCKET") or "/var/run/docker.sock"  # the one compose-setup.sh chose
    assert settings["DOCKER_GID"] == str(os.stat(socket).st_gid), f"DOCKER_GID is not the group of {socket}"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600  # it holds the admin password
    if EXECUTOR == "celery":
        assert settings.get("REDIS_IMAGE"), f"no REDIS_IMAGE in {env_file}"
    log(f"compose-setup.sh ready in {time.monotonic() - started:.0f}s: {settings.get('AIRFLOW_IMAGE')}")
    # The shell's values would win over the env file: leave only ours.
    env = {key: value for key, value in os.environ.items() if key not in settings}

    recorder = LaunchRecorder(client, f"dood.stack={PROJECT}")
    stack = Stack(
        compose_cmd,
        env_file,
        settings,
        env,
        host_root,
        f"http://127.0.0.1:{port}",
        password,
        recorder,
        client,
        diagnostics_dir=host_root.parent / "diagnostics",
    )
    stack.compose("down", "-v", "--remove-orphans", check=False, timeout=300)  # leftovers of a killed session
    try:
        started = time.monotonic()
        log(f"{shlex.join(compose_cmd)} -p {PROJECT} up -d ({EXECUTOR} executor; data root on the host: {host_root})")
        stack.compose("up", "-d", timeout=900)
        wait_for(
            "the stack to be healthy",
            lambda: all(stack.service_states().get(s) == "running/healthy" for s in HEALTHY_SERVICES),
            timeout=STALL_SECONDS,  # without a service's state changing: a loaded machine starts slowly
            interval=3,
            describe=lambda: f"services: {stack.service_states()}",
            progress=stack.service_states,
        )
        stack.state["up_seconds"] = time.monotonic() - started
        log(f"stack healthy in {stack.state['up_seconds']:.0f}s on {stack.api_url}")
        yield stack
    finally:
        failed = request.session.testsfailed > 0 or not stack.state.get("up_seconds")
        try:
            stack.down(failed=failed)
        finally:
            recorder.close()
            for leftover in client.containers.list(all=True, filters={"label": f"dood.stack={PROJECT}"}):
                leftover.remove(force=True)  # never leave launched steps behind, even when a test failed
            if failed:
                log(f"data root kept for inspection: {host_root}")
            else:
                shutil.rmtree(host_root.parent, ignore_errors=True)
