"""Who a container may be, through dood-proxy running as a non-root uid as in the compose stack.

The escape this closes: the identity check refused only uid 0, so a container running as the proxy's own
uid (50001) owned every "trusted" directory above the bind sources and could re-point them (a read-only
root rewritten, a directory swapped for a link to `/`), and `GroupAdd` with the socket's group opened the
raw daemon. Each case asserts the refusal and, on the raw socket, that nothing was created.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from types import SimpleNamespace

import docker
import pytest
from docker.errors import APIError

from dood.naming import HOST_LABEL, STACK_LABEL, TaskIdentity
from tests.integration.conftest import TEST_IMAGE
from tests.integration.proxy_process import PROXY_UID, as_proxy_user, reachable_tmp, remove_labelled, running_proxy

STEP = "50000:0"
OTHER = "1000:1000"
MARK = "test.identity"
GROUPS_IMAGE = "dood-it-identity-groups:latest"


@pytest.fixture(scope="module")
def base():
    with reachable_tmp("identity") as path:
        yield path


@pytest.fixture(scope="module")
def data_root(base):
    """An allowed root as the compose stack has it: owned by the proxy's uid, 0755, under root-owned dirs."""
    root = base / "data"
    (root / "ro").mkdir(parents=True)
    (root / "ro" / "model.txt").write_text("the champion\n")
    for path in (root, root / "ro", root / "ro" / "model.txt"):
        os.chown(path, PROXY_UID, 0)
    return root


@pytest.fixture(scope="module")
def proxy(base, data_root, docker_api):
    policy = (
        "  allowed_images: ['dood-test-busybox:*', 'dood-it-identity-groups:*', 'dood-it-identity-groupname:*',"
        " 'dood-ml-example:*']\n"
        f"  allowed_host_roots: ['{data_root}']\n"
        f"  read_only_host_roots: ['{data_root / 'ro'}']\n"
        f"  allowed_users: ['{STEP}', '{OTHER}']\n"
        "  allowed_group_add: [2000]\n"
    )
    with running_proxy(_made(base / "proxy"), policy, "--stack", "ident", uid=PROXY_UID) as running:
        client = docker.APIClient(base_url=running.url, version="auto", timeout=60)
        yield SimpleNamespace(**vars(running), api=client)
        client.close()
    remove_labelled(docker_api, f"{MARK}")


@pytest.fixture
def mark(docker_api):
    value = uuid.uuid4().hex[:12]
    yield SimpleNamespace(
        labels={MARK: value}, created=lambda: docker_api.containers(all=True, filters={"label": f"{MARK}={value}"})
    )
    remove_labelled(docker_api, f"{MARK}={value}")


def refused(call) -> str:
    with pytest.raises(APIError) as error:
        call()
    assert error.value.status_code in (400, 403), error.value
    assert "dood-proxy" in str(error.value.explanation)
    return str(error.value.explanation)


def test_the_proxy_runs_as_a_non_root_uid(proxy):
    status = open(f"/proc/{proxy.process.pid}/status").read()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == [str(PROXY_UID)] * 4, uid_line


@pytest.mark.parametrize(
    "user",
    [
        f"{PROXY_UID}:0",  # the finding: the proxy's own uid owns every "trusted" directory
        f"{PROXY_UID}",
        "0:0",
        "0",
        "root",
        "",
        "50000",  # a uid alone: the image's /etc/passwd and /etc/group choose the groups
        "050000:0",
        "50000:999",
        "1:4294967296",
        "65534:65534",
    ],
)
def test_a_container_runs_only_as_an_identity_the_policy_names(proxy, data_root, mark, user):
    host_config = proxy.api.create_host_config(binds=[f"{data_root}:/w"])
    error = refused(
        lambda: proxy.api.create_container(TEST_IMAGE, ["true"], user=user, labels=mark.labels, host_config=host_config)
    )
    assert "policy.allowed_users" in error
    assert mark.created() == []


def test_supplementary_groups_are_allow_listed(proxy, mark):
    socket_gid = str(os.stat("/var/run/docker.sock").st_gid)
    for groups in ([socket_gid], ["0"], ["docker"], ["2001"], ["2000", socket_gid]):
        host_config = proxy.api.create_host_config(group_add=groups)
        error = refused(
            lambda hc=host_config: proxy.api.create_container(
                TEST_IMAGE, ["true"], user=STEP, labels=mark.labels, host_config=hc
            )
        )
        assert "allowed_group_add" in error, groups
    assert mark.created() == []
    allowed = proxy.api.create_container(
        TEST_IMAGE, ["id"], user=STEP, labels=mark.labels, host_config=proxy.api.create_host_config(group_add=["2000"])
    )["Id"]
    proxy.api.start(allowed)
    assert proxy.api.wait(allowed, timeout=60)["StatusCode"] == 0
    assert "groups=0,2000" in proxy.api.logs(allowed).decode()


def test_an_image_cannot_add_groups_to_an_explicit_uid_gid(proxy, docker_api, tmp_path, mark):
    """The image lists the step's uid in the socket's group: with 'uid:gid' Docker adds no image groups."""
    socket_gid = os.stat("/var/run/docker.sock").st_gid
    (tmp_path / "Dockerfile").write_text(
        f"FROM {TEST_IMAGE}\n"
        "RUN echo 'root:x:0:0::/:/bin/sh' > /etc/passwd && echo 'eve:x:50000:0::/:/bin/sh' >> /etc/passwd && "
        f"echo 'root:x:0:' > /etc/group && echo 'sock:x:{socket_gid}:eve' >> /etc/group\n"
    )
    subprocess.run(
        ["docker", "build", "-q", "-t", GROUPS_IMAGE, str(tmp_path)],
        check=True,
        capture_output=True,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    control = docker_api.create_container(GROUPS_IMAGE, ["id"], user="50000", labels=mark.labels)["Id"]
    docker_api.start(control)
    docker_api.wait(control, timeout=60)
    assert f"{socket_gid}(sock)" in docker_api.logs(control).decode()  # what a uid alone would have given

    ours = proxy.api.create_container(GROUPS_IMAGE, ["id"], user=STEP, labels=mark.labels)["Id"]
    proxy.api.start(ours)
    assert proxy.api.wait(ours, timeout=60)["StatusCode"] == 0
    assert proxy.api.logs(ours).decode().strip() == "uid=50000(eve) gid=0(root) groups=0(root)"
    refused(lambda: proxy.api.create_container(GROUPS_IMAGE, ["id"], user="50000", labels=mark.labels))


def test_the_proxy_will_not_start_with_an_identity_it_owns_or_the_sockets_group(base, data_root):
    tmp_path = base / "refused"
    tmp_path.mkdir(exist_ok=True)
    socket_gid = os.stat("/var/run/docker.sock").st_gid
    for bad in (
        f"allowed_users: ['{PROXY_UID}:0']",
        f"allowed_users: ['50000:{socket_gid}']",
        f"allowed_group_add: [{socket_gid}]",
    ):
        config = tmp_path / "dood.yaml"
        config.write_text(f"policy:\n  allowed_host_roots: ['{data_root}']\n  {bad}\n")
        command, env = as_proxy_user(
            ["python", "-m", "dood.proxy", "--listen", f"unix://{tmp_path}/never.sock", "--config", str(config)]
        )
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (bad, done.stderr)
        assert "refusing to start" in done.stderr and "allowed_" in done.stderr, done.stderr
        assert not (tmp_path / "never.sock").exists()


def test_an_image_cannot_rename_an_allowed_supplementary_group(proxy, docker_api, tmp_path, mark):
    """The runtime resolves a GroupAdd entry by *name* in the image's /etc/group first: an image with a group
    named "2000" of the socket's gid would get the socket's group. The proxy reads the file before start."""
    socket_gid = os.stat("/var/run/docker.sock").st_gid
    image = "dood-it-identity-groupname:latest"
    (tmp_path / "Dockerfile").write_text(
        f"FROM {TEST_IMAGE}\nRUN echo 'root:x:0:' > /etc/group && echo '2000:x:{socket_gid}:' >> /etc/group\n"
    )
    build = ["docker", "build", "-q", "-t", image, str(tmp_path)]
    subprocess.run(build, check=True, capture_output=True, env={**os.environ, "DOCKER_BUILDKIT": "0"})
    control = docker_api.create_container(
        image, ["id"], user=STEP, labels=mark.labels, host_config=docker_api.create_host_config(group_add=["2000"])
    )["Id"]
    docker_api.start(control)
    docker_api.wait(control, timeout=60)
    assert f"{socket_gid}(2000)" in docker_api.logs(control).decode()  # what the runtime does without the check

    host_config = proxy.api.create_host_config(group_add=["2000"])
    ours = proxy.api.create_container(image, ["id"], user=STEP, labels=mark.labels, host_config=host_config)["Id"]
    error = refused(lambda: proxy.api.start(ours))
    assert "names a group '2000' with gid" in error
    assert docker_api.inspect_container(ours)["State"]["Status"] == "created"  # never ran


def test_containers_get_a_private_cgroup_namespace(proxy, docker_api, mark):
    made = proxy.api.create_container(TEST_IMAGE, ["cat", "/proc/self/cgroup"], user=STEP, labels=mark.labels)["Id"]
    assert docker_api.inspect_container(made)["HostConfig"]["CgroupnsMode"] == "private"
    proxy.api.start(made)
    proxy.api.wait(made, timeout=60)
    assert "/docker/" not in proxy.api.logs(made).decode()


def test_every_dood_label_is_the_proxys(proxy, docker_api, mark):
    forged = {
        **mark.labels,
        STACK_LABEL: "someone-else",
        HOST_LABEL: "gpu-b",  # no --host on this proxy: the label is not the client's to give
        "dood.gpus": "1",  # a GPU-less create claiming a GPU would block others
        "dood.janitor": "spare-me",
        "dood.dag_id": "d",
    }
    created = proxy.api.create_container(TEST_IMAGE, ["true"], user=STEP, labels=forged)["Id"]
    labels = docker_api.inspect_container(created)["Config"]["Labels"]
    assert labels[STACK_LABEL] == "ident" and labels["dood.managed"] == "true"
    assert HOST_LABEL not in labels and "dood.gpus" not in labels and "dood.janitor" not in labels
    assert labels["dood.dag_id"] == "d" and labels[MARK] == mark.labels[MARK]


def test_another_stacks_names_cannot_be_taken(proxy, docker_api, mark):
    theirs = TaskIdentity(dag_id="train_dag", task_id="train", run_id="manual__1", stack="team-b")
    ours = TaskIdentity(dag_id="train_dag", task_id="train", run_id="manual__1", stack="ident")
    error = refused(
        lambda: proxy.api.create_container(
            TEST_IMAGE, ["true"], user=STEP, name=theirs.container_name(), labels={**mark.labels, **ours.labels()}
        )
    )
    assert "must be the name their task labels give in stack 'ident'" in error
    refused(
        lambda: proxy.api.create_container(TEST_IMAGE, ["true"], user=STEP, name="dood-anything", labels=mark.labels)
    )
    assert mark.created() == []
    made = proxy.api.create_container(
        TEST_IMAGE, ["true"], user=STEP, name=ours.container_name(), labels={**mark.labels, **ours.labels()}
    )["Id"]
    assert docker_api.inspect_container(made)["Name"] == f"/{ours.container_name()}"


def test_limits_default_and_are_bounded(proxy, docker_api, data_root, mark):
    made = proxy.api.create_container(TEST_IMAGE, ["true"], user=STEP, labels=mark.labels)["Id"]
    assert docker_api.inspect_container(made)["HostConfig"]["PidsLimit"] == 4096  # the policy's default
    for host_config in (
        {"PidsLimit": -1},
        {"PidsLimit": 0},
        {"PidsLimit": 100000},
        {"Ulimits": [{"Name": "nproc", "Soft": 1, "Hard": 1}]},
        {"Ulimits": [{"Name": "nofile", "Soft": 1, "Hard": 2**31}]},
        {"Binds": [f"{data_root}:/w:z"]},
        {"Binds": [f"{data_root}:/w:Z"]},
    ):
        refused(
            lambda hc=host_config: proxy.api.create_container(
                TEST_IMAGE, ["true"], user=STEP, labels=mark.labels, host_config=hc
            )
        )
    assert len(mark.created()) == 1


def test_a_step_as_an_allowed_identity_cannot_touch_a_read_only_root(proxy, data_root, mark):
    """The finding's first step, with an identity that is allowed: the proxy-owned root is not its. Bound
    read-write it is refused (the step may not write it, so the runtime must not make mount points in it);
    bound read-only, the step writes nothing."""
    error = refused(
        lambda: proxy.api.create_container(
            TEST_IMAGE, ["true"], user=STEP, labels=mark.labels,
            host_config=proxy.api.create_host_config(binds=[f"{data_root}:/w"]),
        )
    )  # fmt: skip
    assert "bound read-write but uid 50000" in error
    script = "echo evil > /w/ro/model.txt; chmod 777 /w/ro/model.txt; mkdir /w/x; echo rc=$?"
    host_config = proxy.api.create_host_config(binds=[f"{data_root}:/w:ro"])
    made = proxy.api.create_container(
        TEST_IMAGE, ["sh", "-c", script], user=STEP, labels=mark.labels, host_config=host_config
    )["Id"]
    proxy.api.start(made)
    proxy.api.wait(made, timeout=60)
    assert "Read-only file system" in proxy.api.logs(made).decode()
    assert (data_root / "ro" / "model.txt").read_text() == "the champion\n"
    assert oct((data_root / "ro" / "model.txt").stat().st_mode & 0o777) == "0o644"
    assert not (data_root / "x").exists()


def _made(path):
    path.mkdir(exist_ok=True)
    return path


def test_an_image_symlink_cannot_put_a_mount_point_in_a_directory_the_step_may_not_write(proxy, data_root, mark):
    """Second attack pass: Debian's `/lib -> usr/lib` put the mount point `/lib/model_v2.pkl` inside a champion
    directory bound at `/usr/lib`, whatever the lexical rule said; runc made it there, as root. A directory bound
    read-write must be one the step may write; read-only, the runtime's mkdir fails."""
    image = "dood-ml-example:latest"
    champion = data_root / "champion"
    champion.mkdir(exist_ok=True)
    os.chown(champion, PROXY_UID, 0)
    binds = [f"{champion}:/usr/lib", f"{data_root / 'ro' / 'model.txt'}:/lib/model_v2.pkl:ro"]
    error = refused(
        lambda: proxy.api.create_container(
            image, ["true"], user=STEP, labels=mark.labels, host_config=proxy.api.create_host_config(binds=binds)
        )
    )
    assert "bound read-write but uid 50000" in error
    binds[0] += ":ro"
    made = proxy.api.create_container(
        image, ["true"], user=STEP, labels=mark.labels, host_config=proxy.api.create_host_config(binds=binds)
    )["Id"]
    # Docker orders mounts of one depth in no fixed order: mounted first, the file's mount point is made in the
    # image's own /usr/lib (then hidden); mounted after the read-only bind, runc's mkdir fails. Either way:
    with contextlib.suppress(APIError):
        proxy.api.start(made)
    assert list(champion.iterdir()) == []  # nothing was made in the directory the step may not write


def test_named_hosts_containers_and_name_holders_stay_unnamed(proxy, docker_api, mark):
    """Second attack pass: a proxy without --host listed its stack's containers launched for a named host, and
    a name conflict's 409 carried the full id of the container holding the name (another stack's, say)."""
    labels = {**mark.labels, "dood.managed": "true", "dood.stack": "ident", "dood.host": "gpu-b"}
    elsewhere = docker_api.create_container(TEST_IMAGE, ["true"], labels=labels, name=f"held-{mark.labels[MARK]}")
    listed = {c["Id"] for c in proxy.api.containers(all=True, filters={"label": f"{MARK}={mark.labels[MARK]}"})}
    assert elsewhere["Id"] not in listed
    ours = proxy.api.create_container(TEST_IMAGE, ["true"], user=STEP, labels=mark.labels)["Id"]
    assert ours in {c["Id"] for c in proxy.api.containers(all=True, filters={"label": f"{MARK}={mark.labels[MARK]}"})}
    with pytest.raises(APIError) as caught:
        proxy.api.create_container(
            TEST_IMAGE, ["true"], user=STEP, labels=mark.labels, name=f"held-{mark.labels[MARK]}"
        )
    assert caught.value.status_code == 409  # the SDK's conflict, as before
    assert elsewhere["Id"][:12] not in str(caught.value.explanation)
