"""Two dood stacks on one Docker host, same DAG ids and run ids: neither sees nor touches the other's.

Each stack is a real dood-proxy (`--stack team-a`, `--stack team-b`) on the real engine. Stack B runs a
"training" with exactly the identity labels stack A would give its own; A's proxy, A's janitor and A's
reattach lookup must act as if it did not exist.
"""

from __future__ import annotations

from datetime import timedelta

import docker
import pytest
from docker.errors import APIError

from dood.config.model import parse_config
from dood.hooks.dood import DoodHook
from dood.janitor import MISSING, sweep
from dood.naming import STACK_LABEL, TaskIdentity
from tests.integration.conftest import TEST_IMAGE
from tests.integration.proxy_process import remove_labelled, running_proxy

IDENTITY = TaskIdentity(dag_id="dood_it_stacks", task_id="train", run_id="manual__2026-12-01T00:00:00+00:00")
POLICY = "  allowed_images: ['dood-test-busybox:*']\n  allowed_users: ['50000:0', '1000:1000']\n"


@pytest.fixture(scope="module")
def stacks(tmp_path_factory, docker_api):
    with (
        running_proxy(tmp_path_factory.mktemp("stack-a"), POLICY, "--stack", "team-a") as a,
        running_proxy(tmp_path_factory.mktemp("stack-b"), POLICY, "--stack", "team-b") as b,
    ):
        clients = {
            name: docker.APIClient(base_url=p.url, version="auto", timeout=60) for name, p in (("a", a), ("b", b))
        }
        yield {"a": a, "b": b, **{f"api_{k}": v for k, v in clients.items()}}
        for client in clients.values():
            client.close()
    remove_labelled(docker_api, f"dood.dag_id={IDENTITY.dag_id}")


@pytest.fixture(scope="module")
def theirs(stacks, docker_api):
    """Stack B's running training: the labels A would use, with B's stack forced by B's proxy."""
    api = stacks["api_b"]
    labels = {**IDENTITY.labels(), STACK_LABEL: "team-a"}  # even a forged stack label is overwritten
    container = api.create_container(TEST_IMAGE, ["sleep", "120"], user="1000:1000", labels=labels)["Id"]
    api.start(container)
    assert docker_api.inspect_container(container)["Config"]["Labels"][STACK_LABEL] == "team-b"
    return container


def test_a_proxy_refuses_every_call_on_another_stacks_container(stacks, theirs, docker_api):
    api = stacks["api_a"]
    for what, call in (
        ("inspect", lambda: api.inspect_container(theirs)),
        ("logs", lambda: api.logs(theirs)),
        ("wait", lambda: api.wait(theirs, timeout=5)),
        ("stop", lambda: api.stop(theirs, timeout=1)),
        ("kill", lambda: api.kill(theirs)),
        ("remove", lambda: api.remove_container(theirs, force=True)),
    ):
        with pytest.raises(APIError) as caught:
            call()
        assert caught.value.status_code == 403, what
        assert "another dood stack, not 'team-a'" in caught.value.explanation, what
        assert "team-b" not in caught.value.explanation, what  # the other stack is not named
    assert theirs not in {c["Id"] for c in api.containers(all=True)}
    assert docker_api.inspect_container(theirs)["State"]["Running"] is True  # untouched, on the raw socket


def test_a_janitor_never_lists_another_stacks_container(stacks, theirs, docker_api):
    """Its Airflow never heard of B's task, so it would call B's training an orphan: it must not see it."""
    told = []
    for api in (stacks["api_a"], docker_api):  # through A's proxy, and even on the raw socket
        verdicts = sweep(api, lambda labels: MISSING, ttl=timedelta(0), dry_run=False, stack="team-a", log=told.append)
        assert verdicts == []
    assert docker_api.inspect_container(theirs)["State"]["Running"] is True
    assert all("0 containers of stack 'team-a'" in line for line in told), told


def test_reattach_in_one_stack_never_adopts_the_others(stacks, theirs):
    hook_a = DoodHook(parse_config({"docker": {"url": stacks["a"].url}, "mount_discovery": {"mode": "off"}}))
    hook_b = DoodHook(parse_config({"docker": {"url": stacks["b"].url}, "mount_discovery": {"mode": "off"}}))
    assert (hook_a.stack, hook_b.stack) == ("team-a", "team-b")  # each proxy's own stack wins
    mine_a = TaskIdentity(**{**IDENTITY.__dict__, "stack": hook_a.stack})
    mine_b = TaskIdentity(**{**IDENTITY.__dict__, "stack": hook_b.stack})
    assert hook_a.find_containers(mine_a.task_labels()) == []  # what reattach looks for
    assert [c["Id"] for c in hook_b.find_containers(mine_b.task_labels())] == [theirs]
    assert mine_a.container_name() != mine_b.container_name()  # no 409 between the stacks either
