"""Airflow under the CeleryExecutor, all host processes of the test's own: a Redis broker on a free loopback
port, the services of airflow_stack.py (SQLite metadata DB; Celery's results in a SQLite file of their own),
and Celery workers started, stopped and SIGKILLed one by one. `two_hosts()` arranges them with two Docker
engines (test_hosts_celery.py, benchmarks/bench_hosts.py).

Airflow 3.3.2 and the Celery provider 3.26 accept CeleryExecutor on SQLite (nothing checks the pairing; only
LocalExecutor is "local"); workers never open the metadata DB (they use the Execution API), so SQLite's
single writer is the scheduler's and the api-server's, as with LocalExecutor.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import psutil
import pytest
import redis
import yaml

from tests.integration.airflow_stack import (
    AIRFLOW,
    MAIN_ENGINE_URL,
    AirflowStack,
    _signal_group,
    stack_env,
)
from tests.integration.proxy_process import remove_labelled, running_proxy
from tests.integration.second_engine import SecondEngine
from tests.ports import free_port

REDIS_SERVER = "/usr/bin/redis-server"
HERE = Path(__file__).resolve().parent
CONFIG = HERE / "hosts_celery.yaml"
DAGS = HERE / "celery_dags" / "dood_hc_dags.py"
BENCH_DAGS = HERE / "celery_dags" / "dood_hc_bench_dags.py"
STACK = "dood-hc"  # the config's stack, forced by both proxies
IMAGE = "dood-test-busybox:latest"
# What worker b records as its hostname (the task instances' `hostname`), as a worker in a container of another
# machine does: its container id, which resolves nowhere else. The api-server can therefore never reach B's
# log server (nor does B serve one: --skip-serve-logs); B's task logs reach it through the shared log folder.
HOST_B_WORKER_HOSTNAME = "3f2a9c41d7be"
SHARED_LOGS = "shared-logs"  # the compose stacks' DOOD_LOG_ROOT: one folder on the storage every host mounts


@dataclass
class RedisBroker:
    """`redis-server` on 127.0.0.1:`port`, no persistence, in `home`."""

    home: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if not os.access(REDIS_SERVER, os.X_OK):
            pytest.fail(f"{REDIS_SERVER} is missing: bash scripts/ensure-redis.sh (Debian's redis-server)")
        command = [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        command += ["--dir", str(self.home), "--protected-mode", "yes"]
        with (self.home / "redis.log").open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis(port=self.port, socket_timeout=1).ping()
                return
            except redis.RedisError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"redis-server did not start: {(self.home / 'redis.log').read_text()[-2000:]}")
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def celery_env(env: dict[str, str], home: Path, broker: RedisBroker) -> dict[str, str]:
    """The stack's environment for CeleryExecutor with this broker; task results in their own SQLite file."""
    return {
        **env,
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": broker.url,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+sqlite:///{home / 'celery-results.db'}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "4",
        # one Execution API call may wait on SQLite's single writer while tasks start at once on 2 cores
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
    }


@dataclass
class CeleryWorker:
    """`airflow celery worker` for `queues`, as the Docker host `dood_host` ($DOOD_HOST) runs it."""

    stack: AirflowStack
    name: str
    queues: str
    dood_host: str
    process: subprocess.Popen | None = None
    env: dict[str, str] = field(default_factory=dict)  # its own settings, over the stack's

    def start(self, wait: bool = True) -> None:
        """Start it; with `wait`, return once Celery says it is ready (else call `wait_ready`)."""
        env = {**self.stack.env, **self.env, "DOOD_HOST": self.dood_host}
        args = [AIRFLOW, "celery", "worker", "--queues", self.queues, "--celery-hostname", f"{self.name}@%h"]
        args += ["--skip-serve-logs", "--without-gossip", "--without-mingle"]  # task logs are files on this host
        log = open(self.stack.home / f"worker-{self.name}.log", "ab")
        self.process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        self.stack._wait_until(self.ready, 180, f"Celery worker {self.name} to listen on {self.queues}")

    def ready(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"Celery worker {self.name} exited ({self.process.returncode}):\n{self.log_tail()}")
        return " ready." in self.log_tail(20000)

    def stop(self) -> None:
        """Celery's warm shutdown (SIGTERM to the group): running tasks finish, nothing new is taken."""
        if self.process is None or self.process.poll() is not None:
            return
        _signal_group(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the worker and everything it started (task supervisors and their runners, which sit in
        process groups of their own): the host's worker is gone at once, as in a crash."""
        kill_tree(self.process)

    def log_tail(self, size: int = 4000) -> str:
        path = self.stack.home / f"worker-{self.name}.log"
        return path.read_text(errors="replace")[-size:] if path.exists() else "(no log)"


def import_pools(stack: AirflowStack) -> None:
    """The pools placement uses (`python -m dood.hosts pools`), imported as an operator does."""
    pools = stack.home / "pools.json"
    made = subprocess.run(
        [str(Path(AIRFLOW).with_name("python")), "-m", "dood.hosts", "pools"],
        env=stack.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    pools.write_text(made.stdout)
    imported = subprocess.run(
        [AIRFLOW, "pools", "import", str(pools)], env=stack.env, capture_output=True, text=True, check=False
    )
    assert imported.returncode == 0, imported.stdout + imported.stderr


def kill_service(stack: AirflowStack, service: str) -> None:
    """SIGKILL one Airflow service's process group (no graceful exit), then start it again."""
    kill_tree(stack.processes[service])
    stack._start_service(service)
    stack._wait_until(stack._healthy, 180, f"the Airflow services to be healthy after killing {service}")


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL a process and all its descendants, whatever process group they put themselves in."""
    try:
        tree = [process.pid, *(child.pid for child in psutil.Process(process.pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        tree = [process.pid]
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=10)


@dataclass
class TwoHosts:
    """What `two_hosts()` runs: host-b's engine, the stack, the workers (none under LocalExecutor)."""

    stack: AirflowStack
    engine_b: SecondEngine
    workers: dict[str, CeleryWorker]
    proxy_a_url: str
    proxy_b_url: str
    proxy_b_read_only_url: str  # what the api-server reads host-b through (hosts.host-b.ui_docker)


@contextlib.contextmanager
def two_hosts(
    home: Path, executor: str = "CeleryExecutor", dag_files: tuple[Path, ...] = (DAGS,), **env: str
) -> Iterator[TwoHosts]:
    """host-a (the main engine) and host-b (a second dockerd of our own), a dood-proxy each (`--host`), the
    config hosts_celery.yaml naming both, and Airflow's services with the DAGs of celery_dags/. Under
    CeleryExecutor: Redis, and worker a (queue `default`, DOOD_HOST=host-a) and worker b (`host-b`,
    DOOD_HOST=host-b). Under LocalExecutor every service has DOOD_HOST=host-a (the scheduler runs the tasks).
    Every container of the stack is removed from both engines before and after.

    As the two-host compose files arrange it: every process' task logs go to one shared folder (`SHARED_LOGS`,
    their DOOD_LOG_ROOT), worker b records a hostname nothing resolves (`HOST_B_WORKER_HOSTNAME`) and serves
    no logs; host-b also has a read-only dood-proxy, the api-server's `ui_docker` for it."""
    os.chmod(home, 0o755)
    (home / "dags").mkdir()
    for dag_file in dag_files:
        shutil.copy(dag_file, home / "dags")
    engine_b = SecondEngine.for_session(role="hosts", subnet=217)
    policy = f"  allowed_images: ['dood-test-busybox:*']\n  allowed_host_roots: ['{home}']\n"
    port = free_port()
    stack = AirflowStack(home, f"http://127.0.0.1:{port}", {})
    with contextlib.ExitStack() as cleanup:
        engine_b.start()
        cleanup.callback(engine_b.stop)
        engine_b.load_image(IMAGE)
        proxies = {}
        for name, upstream, *mode in (
            ("a", MAIN_ENGINE_URL),
            ("b", engine_b.url),
            ("b-ro", engine_b.url, "--read-only"),
        ):
            (home / f"proxy-{name}").mkdir()
            host = f"host-{name[0]}"
            proxies[name] = cleanup.enter_context(
                running_proxy(
                    home / f"proxy-{name}", policy, "--stack", STACK, "--host", host, "--upstream", upstream, *mode
                )
            )
        stack.env = stack_env(home, port, executor=executor)
        if executor == "CeleryExecutor":
            broker = RedisBroker(home)
            broker.start()
            cleanup.callback(broker.stop)
            stack.env = celery_env(stack.env, home, broker)
        else:
            stack.env["DOOD_HOST"] = "host-a"
        stack.env.update(
            DOOD_CONFIG=str(_config_with_ui_docker(home)),
            DOOD_HC_ROOT=str(home),
            DOOD_HC_PROXY_A=proxies["a"].url,
            DOOD_HC_PROXY_B=proxies["b"].url,
            DOOD_HC_PROXY_B_RO=proxies["b-ro"].url,
            AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(home / SHARED_LOGS),
            **env,
        )
        apis = (docker.APIClient(base_url=MAIN_ENGINE_URL), engine_b.api())
        remove_stack_containers(*apis)
        cleanup.callback(remove_stack_containers, *apis)
        cleanup.callback(stack.stop)
        stack.start()
        workers = {}
        if executor == "CeleryExecutor":
            workers = {
                "a": CeleryWorker(stack, "a", "default", "host-a"),
                "b": CeleryWorker(stack, "b", "host-b", "host-b", env=_elsewhere(home)),
            }
            for worker in workers.values():
                cleanup.callback(worker.stop)
                worker.start(wait=False)
        import_pools(stack)  # while the workers start
        for worker in workers.values():
            worker.wait_ready()
        yield TwoHosts(stack, engine_b, workers, proxies["a"].url, proxies["b"].url, proxies["b-ro"].url)


def _config_with_ui_docker(home: Path) -> Path:
    """hosts_celery.yaml, with host-b's read-only listener as the UI's way to it (`hosts.host-b.ui_docker`)."""
    config = yaml.safe_load(CONFIG.read_text())
    config["hosts"]["host-b"]["ui_docker"] = {"url": "${DOOD_HC_PROXY_B_RO}"}
    path = home / "hosts_celery.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _elsewhere(home: Path) -> dict[str, str]:
    """Worker b's settings of a worker on another machine: its hostname resolves nowhere here
    (`[core] hostname_callable`, a module of its own on its PYTHONPATH)."""
    library = home / "worker-b-lib"
    library.mkdir()
    (library / "dood_hc_hostname.py").write_text(f"def container_id():\n    return {HOST_B_WORKER_HOSTNAME!r}\n")
    return {"AIRFLOW__CORE__HOSTNAME_CALLABLE": "dood_hc_hostname.container_id", "PYTHONPATH": str(library)}


def remove_stack_containers(*apis) -> None:
    """Every container of the stack `dood-hc` (our label), on each engine."""
    for api in apis:
        with contextlib.suppress(docker.errors.DockerException):
            remove_labelled(api, f"dood.stack={STACK}")
