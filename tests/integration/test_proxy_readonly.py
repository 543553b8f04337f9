"""dood-proxy --read-only on the real engine (the api-server's endpoint for the UI): list, inspect, one stats
sample and log tails of dood's containers pass; create, start, stop, kill, remove, exec are refused and the
direct socket shows nothing changed; other containers stay invisible."""

from __future__ import annotations

import docker
import pytest
from docker.errors import APIError

from tests.integration.proxy_process import running_proxy

IMAGE = "dood-test-busybox:latest"
OURS = {"dood.managed": "true", "dood.stack": "dood", "dood.dag_id": "dood_it_readonly"}


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


def test_read_only_listener_reads_and_refuses_every_change(tmp_path, docker_api, containers):
    ours, foreign = containers
    with running_proxy(tmp_path, "  allowed_images: ['*']\n", "--read-only") as proxy:
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
