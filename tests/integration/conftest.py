"""Integration fixtures: a real Docker engine, the locally built test image, a real Airflow metadata DB."""

from __future__ import annotations

import contextlib
import sys
from datetime import datetime, timedelta, timezone
from itertools import count
from pathlib import Path

import docker
import pytest
from docker.errors import DockerException, ImageNotFound

from dood.naming import MANAGED_LABEL
from tests.integration.airflow_stack import airflow_stack  # noqa: F401  (a real scheduler, for kill paths)
from tests.integration.gpu_fixtures import gpu_engine  # noqa: F401  (the second engine, for GPU tests)

TEST_IMAGE = "dood-test-busybox:latest"
_dates = count(1)
_BASE = datetime.now(timezone.utc).replace(microsecond=0)
sys.path.insert(0, str(Path(__file__).parent / "dags"))


def pytest_collection_modifyitems(items):
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def docker_api():
    try:
        api = docker.APIClient(base_url="unix:///var/run/docker.sock")
        api.ping()
    except DockerException as exc:
        pytest.fail(f"No Docker engine answers ({exc}). Start one: bash scripts/ensure-docker.sh")
    try:
        api.inspect_image(TEST_IMAGE)
    except ImageNotFound:
        pytest.fail(f"Test image {TEST_IMAGE} is missing. Build it: bash scripts/build-images.sh test")
    return api


@pytest.fixture(scope="session")
def airflow_db():
    from airflow.utils import db

    db.initdb()


def run_id_for(when: datetime) -> str:
    """The run id `dag.test()` gives a manual run at this logical date (container names derive from it)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.types import DagRunType

    return DagRun.generate_run_id(run_type=DagRunType.MANUAL, logical_date=when, run_after=when)


@pytest.fixture
def next_date():
    """A logical date no earlier test run of this session used."""
    return _BASE + timedelta(minutes=next(_dates))


@pytest.fixture
def dag_run(airflow_db, docker_api):
    """Run one test DAG through `dag.test()`; returns the finished DagRun."""
    import dood_it_dags
    import dood_it_janitor
    import dood_it_pipelines

    dags = {**dood_it_dags.DAGS, **dood_it_pipelines.DAGS, "dood_janitor": dood_it_janitor.dag}

    def run(dag_id: str, when: datetime, conf: dict | None = None):
        return dags[dag_id].test(logical_date=when, run_after=when, run_conf=conf)

    return run


def task_state(dagrun, task_id: str = "run"):
    from airflow.utils.session import create_session

    with create_session() as session:
        return dagrun.get_task_instance(task_id, session=session).state


def xcom_value(dagrun, task_id: str = "run"):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter_by(dag_id=dagrun.dag_id, run_id=dagrun.run_id, task_id=task_id).all()
        return {row.key: row.value for row in rows if not row.key.startswith("_link_")}  # extra links' own XComs


@pytest.fixture
def ours(docker_api):
    """Containers labelled as ours for a DAG; every one left is removed after the test."""

    def find(dag_id: str):
        return docker_api.containers(all=True, filters={"label": [f"{MANAGED_LABEL}=true", f"dood.dag_id={dag_id}"]})

    def remove_test_containers():
        for container in docker_api.containers(all=True, filters={"label": f"{MANAGED_LABEL}=true"}):
            if container["Labels"].get("dood.dag_id", "").startswith("dood_it"):
                docker_api.remove_container(container["Id"], force=True)

    remove_test_containers()  # leftovers of an interrupted earlier session must not count
    yield find
    remove_test_containers()


@pytest.fixture
def container(docker_api):
    """Create (and by default start) a labelled busybox container; every one is removed after the test."""
    created = []

    def make(command, *, start=True, mem_limit=None):
        host_config = docker_api.create_host_config(mem_limit=mem_limit, memswap_limit=mem_limit)
        labels = {MANAGED_LABEL: "true", "dood.dag_id": "dood_it_trigger"}
        cid = docker_api.create_container(TEST_IMAGE, command, labels=labels, host_config=host_config)["Id"]
        created.append(cid)
        if start:
            docker_api.start(cid)
        return cid

    yield make
    for cid in created:
        with contextlib.suppress(Exception):
            docker_api.remove_container(cid, force=True, v=True)
