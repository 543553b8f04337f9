"""The symlink escape, on the real engine through the real dood-proxy: a bind source can never be re-pointed.

The attack (issue 9): a container of ours plants `ln -s / <dir>/rootlink` in a directory it has bound
read-write, then a second create binds `<dir>/rootlink` and, when the daemon resolves it at start, gets
the host's `/`. Every variant below is refused, and the test checks on the raw socket and the host's
filesystem that nothing dangerous happened. Attackers use the raw docker SDK through the proxy.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from types import SimpleNamespace

import docker
import pytest
from docker.errors import APIError

from tests.integration.conftest import TEST_IMAGE
from tests.integration.proxy_process import remove_labelled, running_proxy

ATTACKER = "4242:4242"  # a non-root user, as the policy demands
LABEL = {"dood.dag_id": "dood_it_proxy_binds"}
FLIP_SECONDS = 8


@pytest.fixture(scope="module")
def setup(tmp_path_factory, docker_api):
    base = tmp_path_factory.mktemp("dood-binds")
    allowed = base / "allowed"
    (allowed / "ro").mkdir(parents=True)
    (allowed / "plain").mkdir()
    (allowed / "plain" / "marker.txt").write_text("the real directory\n")
    policy = (
        "  allowed_images: ['dood-test-busybox:*']\n"
        f"  allowed_host_roots: ['{allowed}']\n"
        f"  read_only_host_roots: ['{allowed / 'ro'}']\n"
        f"  allowed_users: ['{ATTACKER}']\n"
    )
    with running_proxy(base, policy) as proxy:
        client = docker.APIClient(base_url=proxy.url, version="auto", timeout=60)
        yield SimpleNamespace(proxy=proxy, api=client, allowed=allowed)
        client.close()


@pytest.fixture(autouse=True)
def cleanup(docker_api):
    yield
    remove_labelled(docker_api, "dood.dag_id=dood_it_proxy_binds")


def leaf(setup, name: str, user: str = ATTACKER) -> str:
    """A directory made for a container user by the proxy's own endpoint (as the operator asks for one)."""
    path = f"{setup.allowed}/{name}"
    answer = setup.api.post(f"{setup.api.base_url}/dood/v1/directories", json={"path": path, "user": user})
    assert answer.status_code == 200, answer.text
    return path


def create(setup, binds: list[str], command: str = "true", user: str = ATTACKER, **extra) -> str:
    host_config = setup.api.create_host_config(binds=binds)
    return setup.api.create_container(
        TEST_IMAGE, ["sh", "-c", command], user=user, host_config=host_config, labels=LABEL, **extra
    )["Id"]


def run(setup, binds: list[str], command: str, user: str = ATTACKER) -> tuple[int, str]:
    """Create, start and wait through the proxy: (exit code, output)."""
    container = create(setup, binds, command, user)
    setup.api.start(container)
    code = setup.api.wait(container, timeout=60)["StatusCode"]
    return code, setup.api.logs(container).decode()


def refused(call) -> APIError:
    with pytest.raises(APIError) as caught:
        call()
    assert caught.value.status_code == 403, caught.value.explanation
    return caught.value


def mounts_of_ours(docker_api) -> list[str]:
    """Every bind source of every container this module made, as the daemon holds them (raw socket)."""
    sources = []
    for container in docker_api.containers(all=True, filters={"label": "dood.dag_id=dood_it_proxy_binds"}):
        sources += [m["Source"] for m in docker_api.inspect_container(container["Id"])["Mounts"]]
    return sources


def test_the_two_step_escape_is_refused_at_create(setup, docker_api):
    work = leaf(setup, "work")
    code, output = run(
        setup, [f"{work}:/w"], "ln -s / /w/rootlink && ln -s /var/run/docker.sock /w/dlink && echo planted"
    )
    assert code == 0 and "planted" in output  # the links exist: the attack's first step is not the problem
    error = refused(lambda: create(setup, [f"{work}/rootlink:/host"]))
    assert "writable by group" in error.explanation
    refused(lambda: create(setup, [f"{work}/dlink:/var/run/docker.sock"]))
    assert not any(source.endswith(("rootlink", "dlink")) for source in mounts_of_ours(docker_api))


def test_one_container_binding_its_own_future_link_is_refused(setup, docker_api):
    work = leaf(setup, "self")
    error = refused(lambda: create(setup, [f"{work}:/w", f"{work}/self:/host"], "ln -s / /w/self"))
    assert "HostConfig.Binds[1]" in error.explanation
    assert mounts_of_ours(docker_api) == []


def test_a_link_to_a_read_only_root_gives_no_write_access(setup):
    work = leaf(setup, "rolink")
    assert run(setup, [f"{work}:/w"], f"ln -s {setup.allowed}/ro /w/ro")[0] == 0
    refused(lambda: create(setup, [f"{work}/ro:/data"]))


def test_root_and_named_users_are_refused(setup):
    for user in ("0", "root", ""):
        error = refused(lambda user=user: create(setup, [], user=user))
        assert "allowed_users" in error.explanation


def test_directories_above_a_bind_source_cannot_be_changed_by_a_container(setup):
    """The allowed root cannot be bound read-write by a container that may not write it (the runtime would
    make mount points in it as root); bound read-only, a non-root container cannot swap an entry for a link."""
    error = refused(lambda: create(setup, [f"{setup.allowed}:/w"]))
    assert "bound read-write but uid 4242" in error.explanation
    code, output = run(
        setup, [f"{setup.allowed}:/w:ro"], "mv /w/plain /w/moved; ln -s / /w/plain; ln -s / /w/new; ls -la /w; true"
    )
    assert (setup.allowed / "plain" / "marker.txt").exists() and not (setup.allowed / "plain").is_symlink()
    assert not (setup.allowed / "new").exists() and not (setup.allowed / "moved").exists()
    assert "Read-only file system" in output


def test_a_source_re_pointed_between_create_and_start_is_refused_at_start(setup, docker_api):
    """Only a trusted party (root, here the test) can still change the chain; start checks again anyway."""
    late = setup.allowed / "late"
    late.mkdir()
    container = create(setup, [f"{late}:/host:ro"], "cat /host/etc/hostname")
    late.rmdir()
    late.symlink_to("/")
    try:
        error = refused(lambda: setup.api.start(container))
        assert "refusing to start" in error.explanation and "symlink" in error.explanation
        assert docker_api.inspect_container(container)["State"]["StartedAt"].startswith("0001-")  # never started
    finally:
        late.unlink()


def test_a_flip_loop_racing_create_and_start_never_wins(setup, docker_api):
    """An attacker container flips `work/self` between a directory and `-> /` as fast as it can, and
    another flips entries of the allowed root it has bound; meanwhile we create and start, for a bounded
    time. Every create through the leaf is refused; every start through the root sees the real directory."""
    work = leaf(setup, "flip")
    flipper = create(
        setup, [f"{work}:/w"], "while true; do mkdir /w/self; rmdir /w/self; ln -s / /w/self; rm /w/self; done"
    )
    root_flipper = create(
        setup,
        [f"{setup.allowed}:/r:ro"],  # read-write is refused: the container may not write the root
        "while true; do mv /r/plain /r/x 2>/dev/null; ln -s / /r/plain 2>/dev/null; done",
    )
    setup.api.start(flipper)
    setup.api.start(root_flipper)
    outcomes = {"refused": 0, "saw-real-dir": 0, "escaped": 0}
    deadline = time.monotonic() + FLIP_SECONDS
    while time.monotonic() < deadline:
        try:
            create(setup, [f"{work}/self:/host"], "cat /host/etc/hostname")
            outcomes["escaped"] += 1
        except APIError as exc:
            assert exc.status_code == 403
            outcomes["refused"] += 1
        code, output = run(setup, [f"{setup.allowed}/plain:/host:ro"], "cat /host/marker.txt /host/etc/hostname")
        outcomes["saw-real-dir" if "the real directory" in output and code != 0 else "escaped"] += 1
    for container in (flipper, root_flipper):
        setup.api.remove_container(container, force=True)
    print(f"flip race outcomes over {FLIP_SECONDS}s: {outcomes}")
    assert outcomes["escaped"] == 0, outcomes
    assert outcomes["refused"] > 3 and outcomes["saw-real-dir"] > 3, outcomes


def test_the_directories_endpoint_makes_leaves_only(setup):
    def make(body: dict) -> tuple[int, str]:
        answer = setup.api.post(f"{setup.api.base_url}/dood/v1/directories", json=body)
        return answer.status_code, answer.text

    made = f"{setup.allowed}/runs/{uuid.uuid4().hex[:8]}"
    assert make({"path": made, "user": "4242:4242"})[0] == 200
    info = os.lstat(made)
    assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (0, 4242, 0o2770)  # the proxy's, shared
    assert os.lstat(os.path.dirname(made)).st_uid == 0  # the directory on the way is the proxy's own
    status, text = make({"path": made, "user": "4242:4242"})
    assert (status, json.loads(text)) == (200, {"path": made, "created": False, "user": "4242:4242"})
    assert os.lstat(made).st_gid == 4242  # kept as is
    for body, status in (
        ({"path": f"{made}/below", "user": "4242:4242"}, 403),  # below a leaf: its owner could plant links
        ({"path": "/etc/dood", "user": "4242:4242"}, 403),
        ({"path": f"{setup.allowed}/a/../../x", "user": "4242:4242"}, 400),
        ({"path": f"{setup.allowed}/ro/x", "user": "4242:4242"}, 403),
        ({"path": f"{setup.allowed}/y", "user": "airflow"}, 400),
        ({"path": f"{setup.allowed}/y", "user": "5000:5000"}, 403),  # not one of policy.allowed_users
        ({"path": f"{setup.allowed}/y", "clear": ["../../etc/passwd"]}, 400),  # nothing is deleted any more
    ):
        assert make(body)[0] == status, body
    assert not os.path.exists("/etc/dood") and not os.path.exists(f"{made}/below")
    assert not os.path.exists(f"{setup.allowed}/y")
