"""Two Docker hosts on this machine: the main engine ("host-a") and a second dockerd ("host-b", the session's
`gpu_engine`), each behind its own dood-proxy started with `--host`, host-b's reached over TCP with mutual
TLS as another machine's is. A step placed on host-b, run by `dag.test()` as host-b's worker would run it
($DOOD_HOST=host-b), creates its container on host-b's engine (create, attach, start, wait, result: all
through TLS) and never on the main one; the same step taken by a worker of host-a fails before creating
anything.
(The Celery end-to-end with a worker per host: test_hosts_celery.py.)
"""

from __future__ import annotations

import os
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
import yaml

from dood.config.model import HOST_ENV_VAR
from dood.exceptions import DoodConfigError
from dood.naming import HOST_LABEL, STACK_LABEL
from tests.integration.conftest import xcom_value
from tests.integration.proxy_process import remove_labelled, running_proxy
from tests.ports import free_port, wait_for_port

DAG_ID = "dood_it_hosts"
STACK = "dood-it-hosts"
POLICY = "  allowed_images: ['dood-test-busybox:*']\n  allowed_users: ['50000:0', '1000:1000']\n"
CONFIG = str(Path(__file__).resolve().parent / "hosts.yaml")
CERT_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make-host-certs.sh"


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory, docker_api, gpu_engine):
    """A dood-proxy per engine: --host host-a on the main one (unix socket), --host host-b on the second, which
    the worker reaches over TCP with mutual TLS (certificates from scripts/make-host-certs.sh); where they
    listen is exported for tests/integration/hosts.yaml, the one config naming both."""
    certs = tmp_path_factory.mktemp("certs")
    subprocess.run(["bash", str(CERT_SCRIPT), str(certs), "host-b"], check=True, capture_output=True)
    port = free_port()
    tls = [
        "--tls-listen", f"tcp://127.0.0.1:{port}",
        "--tls-cert", str(certs / "host-b" / "server-cert.pem"),
        "--tls-key", str(certs / "host-b" / "server-key.pem"),
        "--tls-ca-cert", str(certs / "ca.pem"),
    ]  # fmt: skip
    with (
        running_proxy(tmp_path_factory.mktemp("proxy-a"), POLICY, "--stack", STACK, "--host", "host-a") as a,
        running_proxy(
            tmp_path_factory.mktemp("proxy-b"), POLICY, "--stack", STACK, "--host", "host-b",
            "--upstream", gpu_engine.url, *tls,
        ) as b,
    ):  # fmt: skip
        wait_for_port(port, b.log)
        exported = {
            "DOOD_IT_HOST_A_URL": a.url,
            "DOOD_IT_HOST_B_ADDRESS": f"127.0.0.1:{port}",
            "DOOD_IT_CERTS": str(certs),
        }
        saved = {name: os.environ.get(name) for name in exported}
        os.environ.update(exported)
        try:
            yield {"engine_b": gpu_engine.api(), "proxy_a": a, "proxy_b": b}
        finally:
            for name, value in saved.items():
                os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)
    for api in (docker_api, gpu_engine.api()):
        remove_labelled(api, f"dood.dag_id={DAG_ID}")


def _ours(api, task_id: str, run_id: str | None = None) -> list[dict]:
    labels = [f"dood.dag_id={DAG_ID}", f"dood.task_id={task_id}"] + ([f"dood.run_id={run_id}"] if run_id else [])
    return api.containers(all=True, filters={"label": labels})


def test_a_step_placed_on_host_b_runs_on_host_b_s_engine_only(two_hosts, docker_api, airflow_db, monkeypatch):
    import dood_it_hosts

    monkeypatch.setenv(HOST_ENV_VAR, "host-b")
    dag = dood_it_hosts.dag
    assert (dag.get_task("on_b").queue, dag.get_task("on_b").pool) == ("dood-host-b", "dood-host-b")
    when = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=3)
    run = dag.test(logical_date=when, run_after=when)
    ti = next(ti for ti in run.get_task_instances() if ti.task_id == "on_b")
    assert ti.state == "success", f"{ti.task_id} ended {ti.state}"
    assert xcom_value(run, "on_b") == {"return_value": {"host": "b"}}  # its result file
    on_b = _ours(two_hosts["engine_b"], "on_b", run.run_id)
    assert len(on_b) == 1, "exactly one container, on host-b's engine"
    labels = on_b[0]["Labels"]
    assert (labels[HOST_LABEL], labels[STACK_LABEL]) == ("host-b", STACK)
    assert _ours(docker_api, "on_b") == [], "the main engine never saw it"


def test_a_deferred_step_on_host_b_is_watched_through_host_b_s_tls_listener(
    two_hosts, docker_api, airflow_db, monkeypatch
):
    """dag.test() runs the trigger inline: its Docker session is the host's network endpoint (mutual TLS)."""
    import dood_it_hosts

    from dood.triggers.container import DoodContainerTrigger

    monkeypatch.setenv(HOST_ENV_VAR, "host-b")
    served = []
    original = DoodContainerTrigger.wait

    async def recording(self):
        served.append((self.target.url, self.target.tls_client_cert))
        return await original(self)

    monkeypatch.setattr(DoodContainerTrigger, "wait", recording)
    dag = dood_it_hosts.dag.partial_subset(["deferred_on_b"], include_upstream=False)
    when = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=4)
    run = dag.test(logical_date=when, run_after=when)
    ti = next(ti for ti in run.get_task_instances() if ti.task_id == "deferred_on_b")
    assert ti.state == "success", f"{ti.task_id} ended {ti.state}"
    assert xcom_value(run, "deferred_on_b") == {"return_value": {"deferred": True}}
    assert served == [
        (f"tcp://{os.environ['DOOD_IT_HOST_B_ADDRESS']}", f"{os.environ['DOOD_IT_CERTS']}/client/cert.pem")
    ]
    assert len(_ours(two_hosts["engine_b"], "deferred_on_b", run.run_id)) == 1
    assert _ours(docker_api, "deferred_on_b") == []


def test_the_same_step_taken_by_host_a_s_worker_fails_before_creating_anything(two_hosts, docker_api, monkeypatch):
    import dood_it_hosts

    monkeypatch.setenv(HOST_ENV_VAR, "host-a")
    before = {api: len(_ours(api, "on_b")) for api in (docker_api, two_hosts["engine_b"])}
    with pytest.raises(DoodConfigError, match="placed on host host-b .* is on host 'host-a' .*nothing was created"):
        dood_it_hosts.dag.get_task("on_b").execute({})
    assert {api: len(_ours(api, "on_b")) for api in before} == before


def test_a_worker_whose_endpoint_is_another_host_s_proxy_refuses_to_launch(two_hosts, monkeypatch, tmp_path):
    """host-b's worker configured with host-a's proxy as its endpoint: the proxy's --host gives it away."""
    swapped = yaml.safe_load(Path(CONFIG).read_text())
    swapped["hosts"]["host-a"]["docker"]["url"] = two_hosts["proxy_a"].url
    swapped["hosts"]["host-b"]["docker"] = {"url": two_hosts["proxy_a"].url}  # the mistake
    path = tmp_path / "swapped.yaml"
    path.write_text(yaml.safe_dump(swapped))
    monkeypatch.setenv(HOST_ENV_VAR, "host-b")
    from dood.config.model import load_config
    from dood.hooks.dood import DoodHook
    from dood.hosts import check_proxy_host

    config = load_config(str(path))
    with pytest.raises(DoodConfigError, match="on host 'host-b' .* is the dood-proxy of host 'host-a'"):
        check_proxy_host(DoodHook(config).api, config, "t")


def test_a_resume_on_another_host_of_the_step_reaches_the_container_on_its_own_host(two_hosts, airflow_db, monkeypatch):
    """A step on several hosts (a shared queue) may resume on another of them: host-a's worker resumes the
    deferred step host-b launched (its handle says host-b) and reads its outcome through host-b's proxy."""
    from types import SimpleNamespace

    import dood_it_hosts

    from dood.lifecycle.results import run_dir_for

    monkeypatch.setenv(HOST_ENV_VAR, "host-b")
    when = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=5)
    run = dood_it_hosts.dag.partial_subset(["deferred_on_b"], include_upstream=False).test(
        logical_date=when, run_after=when
    )
    (launched,) = _ours(two_hosts["engine_b"], "deferred_on_b", run.run_id)
    name = launched["Names"][0].lstrip("/")
    handle = {"container_id": launched["Id"], "container_name": name, "run_dir": run_dir_for("/tmp/dood-runs", name)}
    ti = SimpleNamespace(dag_id=DAG_ID, task_id="deferred_on_b", run_id=run.run_id, map_index=-1, try_number=1)
    event = {"status": "success", "container_id": launched["Id"], "exit_code": 0, "oom_killed": False}

    monkeypatch.setenv(HOST_ENV_VAR, "host-a")
    operator = dood_it_hosts.dag.get_task("deferred_on_b")
    assert operator.execute_complete({"ti": ti}, event, {**handle, "host": "host-b"}) == {"deferred": True}
    with pytest.raises(Exception, match="(?i)no such container|404|not found"):  # without its host: looked for on a
        operator.execute_complete({"ti": ti}, event, handle)


def test_a_sensor_of_host_b_s_container_is_queued_there_and_reaches_it_from_another_host(
    two_hosts, airflow_db, monkeypatch
):
    from types import SimpleNamespace

    import dood_it_hosts

    sensor = dood_it_hosts.dag.get_task("watch_b")
    assert sensor.queue == "dood-host-b"
    monkeypatch.setenv(HOST_ENV_VAR, "host-b")
    when = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=6)
    run = dood_it_hosts.dag.partial_subset(["started_on_b"], include_upstream=False).test(
        logical_date=when, run_after=when
    )
    assert len(_ours(two_hosts["engine_b"], "started_on_b", run.run_id)) == 1
    ti = SimpleNamespace(dag_id=DAG_ID, task_id="watch_b", run_id=run.run_id, map_index=-1, try_number=1)
    monkeypatch.setenv(HOST_ENV_VAR, "host-a")  # a worker of host-a pokes: it must look on host-b, over TLS
    deadline = time.monotonic() + 60
    while not (poked := sensor.poke({"ti": ti})).is_done:
        assert time.monotonic() < deadline, "the container on host-b never ended"
        time.sleep(0.5)
    assert poked.xcom_value == {"started": "b"}


def test_the_dood_page_reads_every_host_and_host_b_only_through_its_read_only_listener(
    two_hosts, docker_api, gpu_engine, tmp_path_factory, monkeypatch
):
    """The api-server's view (dood.ui.every_host): the main engine, and host-b through a read-only dood-proxy over
    mutual TLS (`hosts.host-b.ui_docker`): both hosts' containers on one page, each row with its host, the log
    tail read from the right engine, and nothing can be created through the UI's route to host-b."""
    import docker

    from dood.ui.every_host import Engines

    certs = tmp_path_factory.mktemp("ui-certs")  # a CA of the UI's own: its certificate opens no creating proxy
    subprocess.run(["bash", str(CERT_SCRIPT), str(certs), "host-b"], check=True, capture_output=True)
    port = free_port()
    read_only = [
        "--read-only", "--stack", STACK, "--host", "host-b", "--upstream", gpu_engine.url,
        "--tls-listen", f"tcp://127.0.0.1:{port}",
        "--tls-cert", str(certs / "host-b" / "server-cert.pem"),
        "--tls-key", str(certs / "host-b" / "server-key.pem"),
        "--tls-ca-cert", str(certs / "ca.pem"),
    ]  # fmt: skip
    labels = {"dood.managed": "true", "dood.stack": STACK, "dood.dag_id": DAG_ID, "dood.task_id": "ui"}
    labels |= {"dood.run_id": "ui-run", "dood.map_index": "-1", "dood.try_number": "1"}
    for api, host in ((docker_api, "host-a"), (two_hosts["engine_b"], "host-b")):
        made = api.create_container(
            "dood-test-busybox:latest", ["sh", "-c", f"echo on-{host}"], labels=labels | {"dood.host": host}
        )
        api.start(made["Id"])
        api.wait(made["Id"])
    client = {k: f"{certs}/client/{f}.pem" for k, f in (("ca", "ca"), ("cert", "cert"), ("key", "key"))}
    config = tmp_path_factory.mktemp("ui") / "dood.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "docker": {"url": "unix:///var/run/docker.sock"},
                "hosts": {
                    "host-b": {
                        "docker": {"url": f"tcp://{os.environ['DOOD_IT_HOST_B_ADDRESS']}"},
                        "ui_docker": {
                            "url": f"tcp://127.0.0.1:{port}",
                            "tls_ca_cert": client["ca"],
                            "tls_client_cert": client["cert"],
                            "tls_client_key": client["key"],
                        },
                    }
                },
            }
        )
    )
    monkeypatch.setenv("DOOD_CONFIG", str(config))
    monkeypatch.delenv(HOST_ENV_VAR, raising=False)
    monkeypatch.delenv("DOOD_UI_DOCKER_URL", raising=False)
    with running_proxy(tmp_path_factory.mktemp("proxy-b-ro"), POLICY, *read_only) as proxy:
        wait_for_port(port, proxy.log)
        engines = Engines.from_config()
        mine = [e for e in engines.containers() if e["Labels"].get("dood.task_id") == "ui"]
        assert sorted((e["DoodHost"], e["Labels"]["dood.host"]) for e in mine) == [("", "host-a"), ("host-b", "host-b")]
        on_b = next(e for e in mine if e["DoodHost"] == "host-b")
        assert engines.log_tail(on_b["Id"]) == ["on-host-b"]  # from host-b's engine, through its listener
        assert engines.errors == []
        with pytest.raises(docker.errors.APIError, match="read-only"):
            engines.readers["host-b"].api.create_container("dood-test-busybox:latest", ["true"], labels=labels)
    from dood.engine.target import DockerTarget

    # host-b's creating listener, trusted by the client, refuses the UI's certificate at the handshake
    b_address = f"tcp://{os.environ['DOOD_IT_HOST_B_ADDRESS']}"
    b_ca = f"{os.environ['DOOD_IT_CERTS']}/client/ca.pem"
    with pytest.raises(requests.exceptions.ConnectionError, match="alert|EOF|reset|closed connection"):
        DockerTarget(b_address, "1.41", b_ca, client["cert"], client["key"]).client(5).containers()


def test_a_retry_on_another_host_of_a_shared_queue_finds_the_earlier_try_s_container(two_hosts, monkeypatch):
    """hosts: [host-a, host-b] share a queue: try 1 ran on host-b and still runs; try 2 lands on host-a's
    worker. It must follow try 1's container on host-b (through host-b's TLS listener), not start a second."""
    from dood.config.model import load_config
    from dood.config.placement import Placement
    from dood.engine.target import DockerTarget
    from dood.lifecycle.adoption import adoptable_elsewhere
    from dood.naming import TaskIdentity

    certs = os.environ["DOOD_IT_CERTS"]
    through_b = DockerTarget(
        f"tcp://{os.environ['DOOD_IT_HOST_B_ADDRESS']}",
        "1.41",
        f"{certs}/client/ca.pem",
        f"{certs}/client/cert.pem",
        f"{certs}/client/key.pem",
    ).client(30)
    try_1 = TaskIdentity(DAG_ID, "shared", "shared-run", try_number=1, stack=STACK, host="host-b")
    made = through_b.create_container(
        "dood-test-busybox:latest", ["sleep", "60"], labels=try_1.labels(), name=try_1.container_name(),
        user="1000:1000",
    )  # fmt: skip
    through_b.start(made["Id"])
    monkeypatch.setenv(HOST_ENV_VAR, "host-a")
    on_a = load_config(CONFIG)
    shared = Placement(hosts=("host-a", "host-b"), queue="dood-shared", pool="dood-shared", pool_slots=1)
    try_2 = TaskIdentity(DAG_ID, "shared", "shared-run", try_number=2, stack=STACK, host="host-a")
    found = adoptable_elsewhere(on_a, try_2, shared)
    assert found is not None, "try 2 on host-a did not find try 1's container on host-b"
    handle, view = found
    assert (handle.container_id, handle.host, view.host) == (made["Id"], "host-b", "host-b")
    assert view.docker.url == f"tcp://{os.environ['DOOD_IT_HOST_B_ADDRESS']}"  # host-b's network endpoint
    one_host = Placement(hosts=("host-a",), queue="dood-host-a", pool="dood-host-a", pool_slots=1)
    assert adoptable_elsewhere(on_a, try_2, one_host) is None  # not placed on host-b: not looked at
    through_b.remove_container(made["Id"], force=True)
