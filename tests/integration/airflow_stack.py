"""A real Airflow under test: `airflow scheduler`, `dag-processor`, `triggerer` and `api-server` (LocalExecutor,
SQLite, a temporary AIRFLOW_HOME, the API on 127.0.0.1 only), driven through the REST API like a user.

`dag.test()` runs everything in one process, so it cannot show what the Task SDK supervisor, the triggerer's
re-sent cancels or a scheduler's heartbeat-timeout detection do to a kill path; this can. Containers are
counted from the engine (labels `dood.dag_id=<dag>`), never from what dood says it did.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import psutil
import pytest
import requests

from dood.naming import MANAGED_LABEL
from tests.ports import free_port

SCHEDULED_DAGS = Path(__file__).parent / "scheduled_dags"
TEMPLATES = Path(tempfile.gettempdir()) / "dood-test-airflow-db"  # migrated metadata DBs (migrated_database)
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
SERVICES = ("scheduler", "dag-processor", "triggerer", "api-server")
SCHEDULED_DAG_PREFIX = "dood_sched_"  # not "dood_it": the other integration tests remove every dood_it* container
MAIN_ENGINE_URL = "unix:///var/run/docker.sock"
HEARTBEAT_TIMEOUT_SECONDS = 12  # how soon the scheduler gives up on a task whose supervisor died
SQLITE_BUSY_TIMEOUT_SECONDS = 30  # how long each Airflow process waits for SQLite's write lock (sqlite_connect_args)
API_TIMEOUT_SECONDS = SQLITE_BUSY_TIMEOUT_SECONDS + 30  # a REST call may wait that long for the lock, then work
DATABASE_ERROR_ATTEMPTS = 3  # REST calls answered 500 "Database error": tried this often in all (AirflowStack.api)


@dataclass
class AirflowStack:
    home: Path
    api_url: str
    env: dict[str, str]
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    # --- life ---

    def start(self) -> None:
        migrated_database(self.env, self.home / "airflow.db")
        for service in SERVICES:
            self._start_service(service)
        self._wait_until(self._healthy, 180, "the Airflow services to become healthy")

    def _start_service(self, service: str) -> None:
        args = [AIRFLOW, service]
        if service == "api-server":
            args += ["--host", "127.0.0.1", "--port", self.api_url.rsplit(":", 1)[1], "--workers", "1"]
        log = open(self.home / f"{service}.log", "ab")
        self.processes[service] = subprocess.Popen(
            args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def restart_service(self, service: str) -> None:
        """Stop one service as an operator would (SIGTERM to its process group, SIGKILL after 30 s), then
        start it again; returns once all are healthy."""
        process = self.processes[service]
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        self._start_service(service)
        self._wait_until(self._healthy, 180, f"the Airflow services to be healthy after restarting {service}")

    def stop(self) -> None:
        for process in self.processes.values():
            _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait(timeout=10)

    def _healthy(self) -> bool:
        for service, process in self.processes.items():
            if process.poll() is not None:
                pytest.fail(f"airflow {service} exited ({process.returncode}):\n{self.log_tail(service)}")
        try:
            health = requests.get(f"{self.api_url}/api/v2/monitor/health", timeout=5).json()
        except (requests.RequestException, ValueError):
            return False
        parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        return all((health.get(part) or {}).get("status") == "healthy" for part in parts)

    def log_tail(self, service: str, size: int = 4000) -> str:
        return (self.home / f"{service}.log").read_text(errors="replace")[-size:]

    # --- REST API ---

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """One REST call, as a user makes it: a 500 "Database error" (SQLite's single writer busy past its
        timeout, `sqlite_connect_args`; the request's transaction was rolled back) is tried again, as a user
        clicks again, at most DATABASE_ERROR_ATTEMPTS times; the failure then says every attempt's reason."""
        failures: list[str] = []
        for attempt in range(1, DATABASE_ERROR_ATTEMPTS + 1):
            response = requests.request(method, f"{self.api_url}/api/v2{path}", timeout=API_TIMEOUT_SECONDS, **kwargs)
            if response.status_code < 400:
                return response.json() if response.content else None  # DELETE answers 204, no body
            failures.append(f"{response.status_code} {response.text[:1000]}")
            reason = _database_error(response)
            if reason is None or attempt == DATABASE_ERROR_ATTEMPTS:
                break
            print(f"{method} /api/v2{path}: attempt {attempt} met a database error ({reason}); trying again")
            time.sleep(attempt)
        raise AssertionError(f"{method} /api/v2{path}: " + "\n  then: ".join(failures))

    def trigger(self, dag_id: str) -> str:
        """Unpause (once parsed) and trigger a run now; returns its run id."""
        self._wait_until(
            lambda: _ok(requests.get(f"{self.api_url}/api/v2/dags/{dag_id}", timeout=10)),
            120,
            f"DAG {dag_id} to be parsed",
        )
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        return self.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None})["dag_run_id"]

    def task(self, dag_id: str, run_id: str, task_id: str = "run") -> dict[str, Any]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")

    def set_task_state(self, dag_id: str, run_id: str, state: str, task_id: str = "run") -> None:
        """What a user does with "Mark failed" (or success) in the UI."""
        self.api("PATCH", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}", json={"new_state": state})

    def clear_task(self, dag_id: str, run_id: str, task_id: str = "run") -> None:
        """What a user does with "Clear" on a task instance (running or not)."""
        body = {"dry_run": False, "task_ids": [task_id], "dag_run_id": run_id, "only_failed": False}
        self.api("POST", f"/dags/{dag_id}/clearTaskInstances", json=body)

    def wait_for_task(self, dag_id: str, run_id: str, states: tuple[str, ...], timeout: float = 120) -> dict:
        found: dict[str, Any] = {}

        def reached() -> bool:
            found.update(self.task(dag_id, run_id))
            return found.get("state") in states

        self._wait_until(reached, timeout, f"{dag_id}/{run_id} to reach {states} (last: {found.get('state')})")
        return found

    def task_log(self, dag_id: str, run_id: str, try_number: int, task_id: str = "run") -> str:
        """The whole task log of one try, as the UI's log view gets it (its records as text)."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        content = self.api("GET", path, params={"full_content": "true"}, headers={"Accept": "application/json"})
        return str(content.get("content"))

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def xcom(self, dag_id: str, run_id: str, task_id: str = "run", key: str = "return_value") -> Any:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        return self.api("GET", path, params={"deserialize": True})["value"]

    # --- processes of a running task ---

    def task_runner(self, ti_id: str) -> psutil.Process:
        """The Task SDK task runner of this task instance try (its title names the TI id); its parent is the
        supervisor."""
        for process in psutil.process_iter(["cmdline"]):
            if f"airflow worker -- {ti_id}" in " ".join(process.info["cmdline"] or []):
                return process
        raise AssertionError(f"no task runner process for task instance {ti_id}")

    def _wait_until(self, condition, timeout: float, what: str, every: float = 0.5) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._revive_scheduler()
            if condition():
                return
            time.sleep(every)
        pytest.fail(f"timed out after {timeout:g}s waiting for {what}")

    revived: int = 0  # scheduler crashes restarted (see _revive_scheduler)

    def _revive_scheduler(self) -> None:
        """Start a crashed scheduler again, as a deployment's restart policy does (compose: `unless-stopped`).
        Airflow 3.3's scheduler on SQLite can die of a StaleDataError when the api-server creates backfill
        runs while it creates a scheduled one (seen in CI, 2026-12-02); the runs then go on, as in production."""
        process = self.processes.get("scheduler")
        if process is None or process.poll() is None:
            return
        self.revived += 1
        tail = self.log_tail("scheduler", 1500)
        print(f"airflow scheduler exited ({process.returncode}); starting it again:\n{tail}")
        self._start_service("scheduler")


SQLITE_CONNECT_MODULE = "dood_it_sqlite"


def sqlite_connect_args(home: Path) -> None:
    """Every Airflow process of the stack waits up to SQLITE_BUSY_TIMEOUT_SECONDS for SQLite's single writer,
    instead of Python's default 5 s: on a busy 2-core machine the scheduler, dag-processor, triggerer and
    api-server can hold the write lock longer than that between them, and the loser's request fails with
    "database is locked" (an API call: 500 "Database error"). A module in $AIRFLOW_HOME/config, which Airflow
    puts on sys.path before it creates its engines, named by [database] sql_alchemy_connect_args(_async)."""
    config = home / "config"
    config.mkdir(exist_ok=True)
    timeout = SQLITE_BUSY_TIMEOUT_SECONDS
    (config / f"{SQLITE_CONNECT_MODULE}.py").write_text(
        f'"""sqlite3.connect arguments of this test stack (tests/integration/airflow_stack.py)."""\n'
        f"SYNC = {{'timeout': {timeout}}}\nASYNC = {{'timeout': {timeout}}}\n"
    )


def _database_error(response: requests.Response) -> str | None:
    """The database's own error of a 500 "Database error" (`[api] expose_stacktrace` is on), or Airflow's 503
    "Database is locked" (backfill creation on SQLite under concurrent access), else None."""
    if response.status_code < 500:
        return None
    try:
        detail = response.json().get("detail")
    except ValueError:
        return None
    if response.status_code == 503 and isinstance(detail, str) and detail.startswith("Database is locked"):
        return detail
    if not isinstance(detail, dict) or detail.get("reason") != "Database error":
        return None
    return str(detail.get("orig_error"))


def migrated_database(env: dict[str, str], target: Path) -> None:
    """`target`: an empty metadata DB at Airflow's newest schema, copied from one `airflow db migrate` made once
    per machine and Airflow version (under a lock: xdist workers start stacks at once). A migration costs each
    stack 15-30 s of CPU, about 5 minutes of a 2-core `make test`; its result depends on nothing but the
    version (the stacks differ in their environment, never in their schema)."""
    import airflow

    TEMPLATES.mkdir(exist_ok=True)
    template = TEMPLATES / f"airflow-{airflow.__version__}.db"
    with open(TEMPLATES / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not template.exists():
            scratch = TEMPLATES / f"migrating-{os.getpid()}.db"
            scratch.unlink(missing_ok=True)
            migrate = subprocess.run(
                [AIRFLOW, "db", "migrate"],
                env={**env, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{scratch}"},
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert migrate.returncode == 0, (
                f"airflow db migrate failed:\n{migrate.stdout[-2000:]}{migrate.stderr[-3000:]}"
            )
            scratch.rename(template)  # whole or not at all: a crashed migration never leaves a template
    shutil.copyfile(template, target)


def _ok(response: requests.Response) -> bool:
    return response.status_code == 200


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def stack_env(home: Path, port: int, executor: str = "LocalExecutor") -> dict[str, str]:
    """The environment of every service: isolated home and DB, LocalExecutor (or `executor`: the Celery stack
    of celery_stack.py), everyone admin (no login), the API on loopback only, and a dood config whose bind
    mounts may only lie under `home`."""
    dood_config = home / "dood.yaml"
    dood_config.write_text(
        f"runs_root: {home / 'runs'}\nmount_discovery: {{mode: 'off'}}\npolicy:\n  allowed_host_roots: ['{home}']\n"
    )
    sqlite_connect_args(home)
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__", "DOOD_"))}
    secret = secrets.token_urlsafe(32)
    return {
        **keep,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__EXECUTOR": executor,
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": f"{SQLITE_CONNECT_MODULE}.SYNC",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": f"{SQLITE_CONNECT_MODULE}.ASYNC",
        "AIRFLOW__API__EXPOSE_STACKTRACE": "True",  # a 500 "Database error" then says which (see AirflowStack.api)
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__SECRET_KEY": secret,
        "AIRFLOW__API_AUTH__JWT_SECRET": secret,
        "AIRFLOW__CORE__FERNET_KEY": "",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_SECONDS),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
        "DOOD_CONFIG": str(dood_config),
        "DOOD_STACK_ROOT": str(home),
    }


@pytest.fixture(scope="module")
def airflow_stack(tmp_path_factory, docker_api):
    """Airflow's four services up, with the DAGs of tests/integration/scheduled_dags; torn down after."""
    home = tmp_path_factory.mktemp("airflow-stack")
    os.chmod(home, 0o755)
    shutil.copytree(SCHEDULED_DAGS, home / "dags", ignore=shutil.ignore_patterns("__pycache__"))
    marks = home / "marks"
    marks.mkdir()
    os.chmod(marks, 0o777)
    port = free_port()
    stack = AirflowStack(home, f"http://127.0.0.1:{port}", stack_env(home, port))
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        remove_stack_containers(docker_api, home)


def remove_stack_containers(docker_api, home: Path, prefix: str = SCHEDULED_DAG_PREFIX) -> None:
    """The containers the stack at `home` launched (DAG ids with `prefix`, a bind mount from `home`), never
    another's: under pytest-xdist, or a second pytest on the same engine, other stacks run theirs now (a test
    once saw its held training force-removed by another process's stack teardown). An interrupted earlier
    session's leftovers are removed once, at the session's start (tests/conftest.py)."""
    for container in docker_api.containers(all=True, filters={"label": f"{MANAGED_LABEL}=true"}):
        if not container["Labels"].get("dood.dag_id", "").startswith(prefix):
            continue
        sources = [Path(mount.get("Source") or "/") for mount in container.get("Mounts") or []]
        if any(source.is_relative_to(home) for source in sources):
            docker_api.remove_container(container["Id"], force=True)


def engine_containers(docker_api, dag_id: str) -> list[dict[str, Any]]:
    """Every container of this DAG the engine has, in any state."""
    return docker_api.containers(all=True, filters={"label": [f"{MANAGED_LABEL}=true", f"dood.dag_id={dag_id}"]})


class EngineEvents:
    """The engine's container events of one DAG, recorded as they happen, from a stream re-opened after every
    break (a daemon restart). The daemon keeps only its last 256 events, in memory: on an engine other
    sessions share, a query afterwards can miss a create of a minute ago."""

    def __init__(self, url: str, dag_id: str, label: str | None = None) -> None:
        self.url = url
        self.dag_id = dag_id
        self.label = label or f"dood.dag_id={dag_id}"  # or another label: every DAG of a stack
        self.events: list[dict[str, Any]] = []
        self._seen: set[tuple] = set()
        self._stopping = threading.Event()
        self._stream = None
        self._since = int(time.time()) - 1
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        filters = {"type": "container", "label": self.label}
        while not self._stopping.is_set():
            try:
                api = docker.APIClient(base_url=self.url, timeout=30)
                self._stream = api.events(since=self._since, filters=filters, decode=True)
                for event in self._stream:
                    key = (event.get("id"), event.get("Action"), event.get("timeNano"))
                    if key not in self._seen:
                        self._seen.add(key)
                        self.events.append(event)
                        self._since = max(self._since, int(event.get("time", 0)))
            except Exception:  # noqa: BLE001 - the daemon is restarting, or the read timed out: re-open
                time.sleep(0.2)

    def stop(self) -> None:
        self._stopping.set()
        if self._stream is not None:
            self._stream.close()
        self._thread.join(timeout=40)

    def of(self, action: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event.get("Action") == action]
