"""dood-proxy --read-only on the real engine (the api-server's endpoint for the UI): list, inspect, one stats
sample and log tails of dood's containers pass; create, start, stop, kill, remove, exec are refused and the
direct socket shows nothing changed; other containers stay invisible. Log tails are bounded and inspects come
without the environment. The proxy runs as uid 50001 with the socket's group, as in the compose stack."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import docker
import pytest
from docker.errors import APIError

from tests.integration.proxy_process import PROXY_UID, remove_labelled, running_proxy

IMAGE = "dood-test-busybox:latest"
OURS = {"dood.managed": "true", "dood.stack": "dood", "dood.dag_id": "dood_it_readonly"}
POLICY = "  allowed_images: ['*']\n"


@pytest.fixture
def proxy_root():
    """A directory uid 50001 can reach (pytest's own tmp is 0700): the proxy's socket, config and log."""
    made = Path(tempfile.mkdtemp(prefix="dood-it-readonly-", dir="/tmp"))
    made.chmod(0o755)
    yield made
    shutil.rmtree(made, ignore_errors=True)


@pytest.fixture
def containers(docker_api):
    ours = docker_api.create_container(IMAGE, ["sh", "-c", "echo ro-hello; sleep 30"], labels=OURS)["Id"]
    foreign = docker_api.create_container(IMAGE, ["sleep", "30"], labels={"other": "x"})["Id"]
    docker_api.start(ours)
    try:
        yield ours, foreign
    finally:
        for cid in (ours, foreign):
            docker_api.remove_container(cid, force=True)


def test_read_only_listener_reads_and_refuses_every_change(proxy_root, docker_api, containers):
    ours, foreign = containers
    with running_proxy(proxy_root, POLICY, "--read-only", uid=PROXY_UID) as proxy:
        api = docker.APIClient(base_url=proxy.url, version="auto", timeout=30)
        listed = {c["Id"] for c in api.containers(all=True)}
        assert ours in listed and foreign not in listed
        assert api.inspect_container(ours)["Config"]["Labels"]["dood.managed"] == "true"
        assert "memory_stats" in api.stats(ours, stream=False, one_shot=True)
        assert b"ro-hello" in api.logs(ours, tail=10)
        assert api.inspect_image(IMAGE)["Id"]
        refused = [
            lambda: api.create_container(IMAGE, ["true"], labels=OURS),
            lambda: api.stop(ours, timeout=1),
            lambda: api.kill(ours),
            lambda: api.remove_container(ours, force=True),
            lambda: api.start(ours),
            lambda: api.exec_create(ours, ["true"]),
            lambda: api.inspect_container(foreign),
            lambda: api.logs(foreign),
        ]
        for call in refused:
            with pytest.raises(APIError) as error:
                call()
            assert error.value.status_code == 403
    assert docker_api.inspect_container(ours)["State"]["Running"]
    created = docker_api.containers(all=True, filters={"label": ["dood.dag_id=dood_it_readonly"]})
    assert [c["Id"] for c in created] == [ours]


def _wait_for_output(docker_api, container: str, text: bytes, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while text not in docker_api.logs(container, tail=5):
        if time.monotonic() > deadline:
            pytest.fail(f"container {container[:12]} did not print {text!r} within {seconds} s")
        time.sleep(0.1)


def test_log_tails_are_bounded_and_inspects_carry_no_environment(proxy_root, docker_api):
    secret = "dood-it-hunter2"
    labels = {**OURS, "dood.dag_id": "dood_it_readonly_bounds"}
    ours = docker_api.create_container(
        IMAGE, ["sh", "-c", "seq 1 3000; sleep 60"], labels=labels, environment={"DOOD_IT_SECRET": secret}
    )["Id"]
    try:
        docker_api.start(ours)
        _wait_for_output(docker_api, ours, b"3000\n")
        assert f"DOOD_IT_SECRET={secret}" in docker_api.inspect_container(ours)["Config"]["Env"]  # the socket has it
        with running_proxy(proxy_root, POLICY, "--read-only", uid=PROXY_UID) as proxy:
            api = docker.APIClient(base_url=proxy.url, version="auto", timeout=30)
            every = api.logs(ours).decode().split()  # the SDK asks tail=all
            assert (len(every), every[0], every[-1]) == (1000, "2001", "3000")
            assert len(api.logs(ours, tail=5000).split()) == 1000
            assert api.logs(ours, tail=10).split() == [str(n).encode() for n in range(2991, 3001)]
            for inspected in (api.inspect_container(ours), api.inspect_container(ours[:12])):
                assert "Env" not in inspected["Config"], "the read-only listener showed a container's environment"
                assert inspected["Config"]["Cmd"] == ["sh", "-c", "seq 1 3000; sleep 60"]  # the UI shows it
                assert secret not in json.dumps(inspected)
            raw = api._result(api._get(api._url("/containers/{0}/json", ours), params={"size": 1}), json=True)
            assert "Env" not in raw["Config"] and raw["SizeRootFs"] >= 0  # asked with size=1: fetched again
            image = api.inspect_image(IMAGE)
            assert "Env" not in (image.get("Config") or {}) and "Env" not in (image.get("ContainerConfig") or {})
            assert image["Id"] == docker_api.inspect_image(IMAGE)["Id"]
    finally:
        remove_labelled(docker_api, "dood.dag_id=dood_it_readonly_bounds")
