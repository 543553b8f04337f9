"""docs/compose.md's set-up commands, run as printed in a copy of the checkout (compose project `dood-docs-c`):
the quickstart (compose-setup.sh, up, ps), the REST API trigger, then the Celery profile's `up` on the same
stack, which pulls nothing (no registry here: every image it names is built by compose-setup.sh).

What the test adds: a free AIRFLOW_API_PORT in `.env` before compose-setup.sh (which keeps it), and the waits a
user does by eye (the stack healthy, the DAG parsed). Every other ```bash block of docs/compose.md is named in
NOT_SET_UP with the reason. Opt-in like the rest of tests/e2e (DOOD_E2E=1); run under the compose lock:
flock /tmp/dood-compose.lock .venv/bin/python -m pytest tests/e2e/test_docs_compose.py
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import docker
import pytest
import requests

from tests.e2e.test_docs_hosts import Machine, bash_blocks, copy_checkout, health, key_of, wait_for
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "compose.md"
PROJECT = "dood-docs-c"
RUN = ("scripts/compose-setup.sh ", "PORT=$(sed", "AIRFLOW_EXECUTOR=CeleryExecutor docker-compose --profile celery up")
NOT_SET_UP = {
    "docker-compose exec airflow-scheduler airflow backfill": "use, not set-up: tests/e2e/test_compose.py backfills",
    "docker-compose exec airflow-scheduler python -c": "the proxy's refusals: tests/e2e/test_compose.py proves them",
    "scripts/build-fab-image.sh": "another auth manager: tests/e2e/test_teams.py",
    "stat -c '%U:%G %a gid=%g'": "troubleshooting a wrong socket group, not set-up",
}


def test_every_block_is_run_or_named():
    blocks = bash_blocks(DOC.read_text())
    table = dict.fromkeys(RUN, "run") | NOT_SET_UP
    unknown = [b.splitlines()[0] for b in blocks if key_of(b, table) is None]
    assert not unknown, f"docs/compose.md blocks neither run by {__name__} nor named in NOT_SET_UP: {unknown}"


@pytest.fixture
def checkout(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("compose-setup.sh and the data root's ownership need root")
    where = tmp_path / PROJECT
    copy_checkout(where)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "DOOD_", "COMPOSE_", "AIRFLOW_"))}
    machine = Machine("this host", where, {**env, "HOME": str(tmp_path), "DOCKER_BUILDKIT": "0"}, {}, tmp_path)
    try:
        yield machine
    finally:
        down = machine.compose("--profile", "celery", "down", "-v", "--remove-orphans", check=False)
        print(f"down: rc {down.returncode} {down.stderr[-500:]}")
        client = docker.from_env()
        for step in client.containers.list(all=True, filters={"label": f"dood.stack={PROJECT}"}):
            step.remove(force=True)  # a step the triggered run had started
        shutil.rmtree(where, ignore_errors=True)


def test_docs_compose_setup_as_printed(checkout):
    machine = checkout
    blocks = {key_of(b, dict.fromkeys(RUN, "")): b for b in bash_blocks(DOC.read_text())}
    port = free_port()
    (machine.cwd / ".env").write_text(f"AIRFLOW_API_PORT={port}\n")
    client = docker.from_env()

    def healthy(*must: str):
        states = health(client, PROJECT)
        return states and all(v in ("healthy", "ok") for v in states.values()) and all(s in states for s in must)

    shown = machine.run(blocks["scripts/compose-setup.sh "], timeout=1800)
    assert "airflow-apiserver" in shown, shown  # docker-compose ps
    wait_for("the quickstart's stack to be healthy", healthy, 300, lambda: f"states {health(client, PROJECT)}")

    def parsed():
        try:
            return requests.get(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5).ok and dag_listed()
        except requests.RequestException:
            return False

    def dag_listed():  # what a user sees in the DAG list before unpausing
        done = machine.compose("exec", "-T", "airflow-scheduler", "airflow", "dags", "list", "-o", "plain", check=False)
        return "dood_breast_cancer" in done.stdout

    wait_for("dood_breast_cancer to be parsed", parsed, 180)
    answer = machine.run(blocks["PORT=$(sed"], timeout=120)
    assert re.search(r'"dag_run_id":\s*"manual__', answer), f"the REST block created no DAG run: {answer}"
    assert '"is_paused":false' in answer.replace(" ", ""), answer

    machine.run(blocks["AIRFLOW_EXECUTOR=CeleryExecutor docker-compose --profile celery up"], timeout=600)
    wait_for(
        "the stack on the celery profile (redis, a worker) to be healthy",
        lambda: healthy("redis", "airflow-worker"),
        300,
        lambda: f"states {health(client, PROJECT)}",
    )
    scheduler = client.containers.list(
        filters={"label": [f"com.docker.compose.project={PROJECT}", "com.docker.compose.service=airflow-scheduler"]}
    )[0]
    env = dict(e.split("=", 1) for e in scheduler.attrs["Config"]["Env"])
    assert env.get("AIRFLOW__CORE__EXECUTOR") == "CeleryExecutor", env.get("AIRFLOW__CORE__EXECUTOR")
