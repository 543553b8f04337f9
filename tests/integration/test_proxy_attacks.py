"""dood-proxy on the real engine: every attack is refused and creates nothing; dood's own calls still work.

The proxy runs as `python -m dood.proxy` on a temporary unix socket. Attacks use the raw docker SDK (or
raw HTTP), never the operator; what was or was not created is checked on the direct socket.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import docker
import pytest
from docker.errors import APIError, NotFound
from docker.types import Mount
from docker.utils.socket import frames_iter

from dood.naming import MANAGED_LABEL
from tests.integration.conftest import TEST_IMAGE
from tests.integration.proxy_process import UnixHTTPConnection, remove_labelled, running_proxy

DAG_LABEL = {"dood.dag_id": "dood_it_proxy"}
USER = "1000:1000"  # the policy runs containers as a numeric non-root user


# --- the proxy, and clients on both sides of it ---


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, docker_api):
    root = tmp_path_factory.mktemp("dood-proxy")
    allowed = root / "allowed"
    (allowed / "ro").mkdir(parents=True)
    (allowed / "data").mkdir()
    (allowed / "data" / "hello.txt").write_text("hello from the host\n")
    (allowed / "etc-link").symlink_to("/etc")
    policy = (
        # The test image, any tag; and a registry named explicitly (nothing listens there): logins may go to it.
        "  allowed_images: ['dood-test-busybox:*', '127.0.0.1:1/dood/*:*']\n"
        f"  allowed_host_roots: ['{allowed}']\n"
        f"  read_only_host_roots: ['{allowed / 'ro'}']\n"
        f"  allowed_users: ['{USER}', '50000:0']\n"
    )
    with running_proxy(root, policy, "--inspectable-label", "dood.role=airflow") as running:
        yield SimpleNamespace(**vars(running), allowed=allowed)


@pytest.fixture(scope="module")
def api(proxy):
    """The raw docker SDK, talking to the proxy (API version negotiated through it)."""
    client = docker.APIClient(base_url=proxy.url, version="auto", timeout=60)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def cleanup(docker_api):
    yield
    remove_labelled(docker_api, "dood.dag_id=dood_it_proxy")


@pytest.fixture
def marker(docker_api):
    """A unique label for this test's create attempts; `created()` lists what the daemon really made."""
    value = uuid.uuid4().hex[:12]

    def created():
        return docker_api.containers(all=True, filters={"label": f"test.case={value}"})

    return SimpleNamespace(
        value=value, labels={**DAG_LABEL, "test.case": value}, name=f"it-proxy-{value}", created=created
    )


@pytest.fixture
def foreign(docker_api):
    """A running container created on the direct socket, without our ownership label."""
    container = docker_api.create_container(
        TEST_IMAGE,
        ["sleep", "120"],
        labels={**DAG_LABEL, "owner": "someone-else"},
        name=f"foreign-{uuid.uuid4().hex[:8]}",
    )
    docker_api.start(container["Id"])
    return SimpleNamespace(id=container["Id"], name=docker_api.inspect_container(container["Id"])["Name"].lstrip("/"))


def raw(proxy, method: str, target: str, body: bytes | None = None, headers: dict | None = None):
    """One raw HTTP request through the proxy: (status, decoded JSON or text)."""
    connection = UnixHTTPConnection(proxy.socket)
    try:
        connection.request(method, target, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(data)
    except ValueError:
        return response.status, data.decode(errors="replace")


def send_bytes(proxy, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(proxy.socket)
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def assert_refused(exc_info, status: int = 403, *fragments: str) -> None:
    error = exc_info.value
    assert error.status_code == status, error
    assert "dood-proxy:" in str(error.explanation)
    for fragment in fragments:
        assert fragment in str(error.explanation)


# --- policy attacks through the docker SDK: refused, and nothing created ---


ATTACKS = {
    "privileged": dict(privileged=True),
    "cap_add_sys_admin": dict(cap_add=["SYS_ADMIN"]),
    "bind_root": dict(binds=["/:/host"]),
    "bind_docker_socket": dict(binds=["/var/run/docker.sock:/var/run/docker.sock"]),
    "mount_docker_socket": dict(
        mounts=[Mount(target="/var/run/docker.sock", source="/var/run/docker.sock", type="bind")]
    ),
    "pid_host": dict(pid_mode="host"),
    "network_host": dict(network_mode="host"),
    "userns_host": dict(userns_mode="host"),
    "ipc_host": dict(ipc_mode="host"),
    "device": dict(devices=["/dev/null:/dev/x:rwm"]),
    "seccomp_unconfined": dict(security_opt=["seccomp=unconfined"]),
    "apparmor_unconfined": dict(security_opt=["apparmor=unconfined"]),
    "volumes_from": dict(volumes_from=["some-container"]),
    "sysctls": dict(sysctls={"net.ipv4.ip_local_port_range": "1024 2048"}),
    "volume_with_bind_driver_opts": dict(
        mounts=[
            Mount(
                target="/e",
                source="etc",
                type="volume",
                driver_config=docker.types.DriverConfig("local", {"type": "none", "o": "bind", "device": "/etc"}),
            )
        ]
    ),
    "published_port": dict(port_bindings={80: ("127.0.0.1", 8080)}),
    "named_volume_of_another_workload": dict(binds=["some-database-volume:/pg"]),
    "network_of_another_workload": dict(network_mode="some-stack_internal"),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_policy_attacks_are_refused(api, marker, attack):
    with pytest.raises(APIError) as caught:
        api.create_container(
            TEST_IMAGE,
            ["true"],
            name=marker.name,
            labels=marker.labels,
            host_config=api.create_host_config(**ATTACKS[attack]),
        )
    assert_refused(caught, 403, "breaks the dood policy")
    assert marker.created() == []


def test_an_image_not_allowed_is_refused(api, marker):
    with pytest.raises(APIError) as caught:
        api.create_container("busybox:latest", ["true"], name=marker.name, labels=marker.labels)
    assert_refused(caught, 403, "Image: 'busybox:latest' matches none of policy.allowed_images")
    assert marker.created() == []
    with pytest.raises(APIError) as caught:
        api.pull("alpine", tag="3.20")
    assert_refused(caught, 403, "alpine:3.20")
    with pytest.raises(APIError) as caught:
        api.inspect_image("alpine:3.20")
    assert_refused(caught, 403)
    assert api.inspect_image(TEST_IMAGE)["Id"].startswith("sha256:")


@pytest.mark.parametrize(
    ("source", "rule"),
    [
        ("etc-link", "is a symlink"),  # a symlink under an allowed root, pointing at /etc (test_proxy_binds)
        ("<up to />/etc", "[system-path]"),  # as many ../ as the allowed root is deep, then etc
        ("ro", "[bind-read-only]"),  # a read-only root mounted read-write
    ],
)
def test_bind_escapes_are_refused(api, proxy, marker, source, rule):
    if source == "<up to />/etc":
        source = "../" * (len(Path(proxy.allowed).parts) - 1) + "etc"
    host_config = api.create_host_config(binds=[f"{proxy.allowed}/{source}:/x"])
    with pytest.raises(APIError) as caught:
        api.create_container(
            TEST_IMAGE, ["true"], user=USER, name=marker.name, labels=marker.labels, host_config=host_config
        )
    assert_refused(caught, 403, rule)
    assert marker.created() == []


def test_every_violation_is_listed_at_once(api, marker):
    host_config = api.create_host_config(privileged=True, pid_mode="host", binds=["/:/host"], cap_add=["SYS_ADMIN"])
    with pytest.raises(APIError) as caught:
        api.create_container("evil:1", ["true"], name=marker.name, labels=marker.labels, host_config=host_config)
    message = str(caught.value.explanation)
    for field in (
        "Image",
        "HostConfig.Privileged",
        "HostConfig.CapAdd[0]",
        "HostConfig.PidMode",
        "HostConfig.Binds[0]",
    ):
        assert f"{field}:" in message
    assert marker.created() == []


# --- the same attacks with keys the way Go reads them: case variants, repeats, the top level ---


def test_control_the_daemon_really_reads_case_variants_and_top_level_host_config(docker_api, marker):
    """Without the proxy these bodies do create privileged containers (never started, removed after)."""
    connection = UnixHTTPConnection("/var/run/docker.sock")
    privileged = []
    for body in (
        {"image": TEST_IMAGE, "labels": marker.labels, "hostconfig": {"privileged": True}},
        {"Image": TEST_IMAGE, "Labels": marker.labels, "Privileged": True},  # no HostConfig object at all
    ):
        connection.request(
            "POST", "/containers/create", body=json.dumps(body), headers={"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        created = json.loads(response.read())
        assert response.status == 201, created
        privileged.append(docker_api.inspect_container(created["Id"])["HostConfig"]["Privileged"])
    connection.close()
    assert privileged == [True, True]


CASE_VARIANT_BODIES = {
    "privileged": {"hostconfig": {"privileged": True}},
    "capadd": {"HostConfig": {"capadd": ["SYS_ADMIN"]}},
    "capadd_string": {"HOSTCONFIG": {"CAPADD": "SYS_ADMIN"}},
    "binds": {"hostConfig": {"binds": ["/:/host"]}},
    "mounts": {"HostConfig": {"mounts": [{"type": "bind", "source": "/var/run/docker.sock", "target": "/s"}]}},
    "pidmode": {"HostConfig": {"pidmode": "host"}},
    "networkmode": {"HostConfig": {"NETWORKMODE": "host"}},
    "usernsmode": {"HostConfig": {"usernsmode": "host"}},
    "devices": {
        "HostConfig": {
            "devices": [{"pathonhost": "/dev/null", "pathincontainer": "/dev/x", "cgrouppermissions": "rwm"}]
        }
    },
    "securityopt": {"HostConfig": {"securityopt": ["seccomp=unconfined"]}},
    "volumesfrom": {"HostConfig": {"volumesfrom": ["some-container"]}},
    "image": {"image": "busybox:latest", "HostConfig": {}},
}


@pytest.mark.parametrize("attack", list(CASE_VARIANT_BODIES))
def test_case_variant_keys_are_checked_like_the_daemon_reads_them(proxy, marker, attack):
    body = {"Image": TEST_IMAGE, "Cmd": ["true"], "Labels": marker.labels, **CASE_VARIANT_BODIES[attack]}
    if "image" in body and "Image" in body:
        del body["Image"]
    status, answer = raw(proxy, "POST", f"/v1.41/containers/create?name={marker.name}", json.dumps(body).encode())
    assert status == 403, answer
    assert answer["message"].startswith("dood-proxy: the container breaks the dood policy")
    assert marker.created() == []


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"Image": "%s", "HostConfig": {}, "HostConfig": {"Privileged": true}}', "given twice"),
        (b'{"Image": "%s", "HostConfig": {"CapAdd": [], "CapAdd": ["SYS_ADMIN"]}}', "given twice"),
        (b'{"Image": "%s", "HostConfig": {"Privileged": false, "privileged": true}}', "[duplicate-key]"),
        (b'{"Image": "%s", "hostconfig": {}, "HostConfig": {"Privileged": true}}', "[duplicate-key]"),
        (b'{"Image": "%s", "Privileged": true}', "[top-level-host-config]"),
        (b'{"Image": "%s", "Binds": ["/:/host"]}', "[top-level-host-config]"),
        ('{"Image": "%s", "HostConfig": {"Priv\u0131leged": true}}'.encode(), "[non-ascii-key]"),
        (b'{"Image": "%s", "HostConfig": {"Bogus": true}}', "[unknown-field]"),
        (b'{"Image": "%s", "HostConfig": {"Memory": NaN}}', "not valid JSON"),
        (b'["%s"]', "must be a JSON object"),
    ],
)
def test_malformed_bodies_are_refused_with_400(proxy, marker, body, fragment):
    payload = body.replace(b"%s", TEST_IMAGE.encode())
    status, answer = raw(proxy, "POST", f"/v1.41/containers/create?name={marker.name}", payload)
    assert status == 400, answer
    assert fragment in answer["message"]
    assert marker.created() == []


def test_oversized_bodies_are_refused_with_413(proxy, marker):
    body = json.dumps({"Image": TEST_IMAGE, "Labels": marker.labels, "Env": ["X=" + "a" * (1024 * 1024)]}).encode()
    status, answer = raw(proxy, "POST", f"/v1.41/containers/create?name={marker.name}", body)
    assert status == 413
    assert "larger than" in answer["message"]
    assert marker.created() == []


def test_smuggling_and_old_api_versions_are_refused(proxy, marker):
    create = json.dumps({"Image": TEST_IMAGE, "Labels": marker.labels, "HostConfig": {"Privileged": True}}).encode()
    smuggled = (
        b"POST /v1.41/_ping HTTP/1.1\r\nHost: docker\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        + b"POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\nContent-Length: %d\r\n\r\n" % len(create)
        + create
    )
    answer = send_bytes(proxy, smuggled)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert answer.count(b"HTTP/1.1") == 1  # the connection closed; the second request was never read
    # Before API 1.24 the daemon applied a HostConfig sent to `start`.
    status, answer = raw(proxy, "POST", "/v1.23/containers/create", create)
    assert status == 400 and "older than" in answer["message"]
    assert marker.created() == []


# --- containers that are not ours ---


def test_foreign_containers_cannot_be_touched(api, proxy, docker_api, foreign):
    calls = {
        "stop": lambda target: api.stop(target, timeout=1),
        "kill": lambda target: api.kill(target),
        "remove": lambda target: api.remove_container(target, force=True),
        "logs": lambda target: api.logs(target),
        "inspect": lambda target: api.inspect_container(target),
        "start": lambda target: api.start(target),
        "wait": lambda target: api.wait(target, timeout=5),
        "attach": lambda target: api.attach(target, stream=False, logs=True),
    }
    for target in (foreign.id, foreign.id[:12], foreign.name):  # by full id, id prefix and name
        for call in calls.values():
            with pytest.raises(APIError) as caught:
                call(target)
            assert_refused(caught, 403, "is not managed by dood")
    with pytest.raises(APIError) as caught:
        api.exec_create(foreign.id, ["true"])
    assert_refused(caught, 403, "exec")
    state = docker_api.inspect_container(foreign.id)["State"]
    assert state["Running"] is True
    assert foreign.id not in {c["Id"] for c in api.containers(all=True)}


def test_inspectable_containers_may_only_be_inspected(api, docker_api):
    """The Airflow containers (labelled for it) can be inspected for mount discovery, and nothing more."""
    airflow = docker_api.create_container(TEST_IMAGE, ["sleep", "60"], labels={**DAG_LABEL, "dood.role": "airflow"})[
        "Id"
    ]
    docker_api.start(airflow)
    assert api.inspect_container(airflow)["Id"] == airflow
    for call in (
        lambda: api.stop(airflow, timeout=1),
        lambda: api.logs(airflow),
        lambda: api.remove_container(airflow),
    ):
        with pytest.raises(APIError) as caught:
            call()
        assert_refused(caught, 403, "is not managed by dood")
    assert docker_api.inspect_container(airflow)["State"]["Running"] is True


def test_missing_containers_are_the_daemons_404(api):
    with pytest.raises(NotFound, match="No such container"):
        api.inspect_container("dood-it-proxy-does-not-exist")
    with pytest.raises(NotFound):
        api.remove_container("0" * 64, force=True)


def test_exec_on_our_own_container_is_refused_too(api, marker):
    ours = api.create_container(TEST_IMAGE, ["sleep", "30"], user=USER, labels=marker.labels)["Id"]
    api.start(ours)
    with pytest.raises(APIError) as caught:
        api.exec_create(ours, ["sh"])
    assert_refused(caught, 403, "exec")


@pytest.mark.parametrize(
    ("method", "target", "body"),
    [
        ("POST", "/v1.41/build?t=evil", b""),
        ("POST", "/v1.41/swarm/init", b'{"ListenAddr": "0.0.0.0:2377"}'),
        ("GET", "/v1.41/swarm", None),
        ("GET", "/v1.41/plugins", None),
        ("POST", "/v1.41/plugins/pull?remote=evil", b"[]"),
        (
            "POST",
            "/v1.41/volumes/create",
            b'{"Name": "evil", "DriverOpts": {"type": "none", "o": "bind", "device": "/"}}',
        ),
        ("POST", "/v1.41/commit?container=x&repo=evil", b"{}"),
        ("PUT", "/v1.41/containers/x/archive?path=/", b"tar"),
        ("POST", "/v1.41/containers/x/update", b'{"Privileged": true}'),
        ("POST", "/v1.41/containers/x/rename?name=y", None),
        ("POST", "/v1.41/images/load", b"tar"),
        ("POST", "/v1.41/images/create?fromSrc=-&repo=evil", b"tar"),
        ("POST", "/v1.41/networks/create", b'{"Name": "evil"}'),
        ("DELETE", "/v1.41/containers/x?link=1", None),
    ],
)
def test_endpoints_off_the_allow_list_are_refused(proxy, method, target, body):
    status, answer = raw(proxy, method, target, body)
    assert status == 403, answer
    assert answer["message"].startswith("dood-proxy: ")


# --- dood's own calls pass ---


def test_create_start_logs_wait_inspect_remove_of_our_own_container(api, docker_api, marker):
    created = api.create_container(
        TEST_IMAGE,
        ["sh", "-c", "echo first; sleep 2; echo second"],
        user=USER,
        name=marker.name,
        labels={"test.case": marker.value, **DAG_LABEL},
    )
    cid = created["Id"]
    labels = docker_api.inspect_container(cid)["Config"]["Labels"]
    assert labels[MANAGED_LABEL] == "true"  # forced, though the client did not send it
    assert labels["test.case"] == marker.value
    api.start(cid)
    started = time.monotonic()
    seen = []
    for chunk in api.logs(cid, stream=True, follow=True):
        running = docker_api.inspect_container(cid)["State"]["Running"]
        seen.append((chunk.decode().strip(), round(time.monotonic() - started, 2), running))
    assert [line for line, _, _ in seen] == ["first", "second"]
    assert seen[0][2] is True and seen[0][1] < 1.5  # streamed while the container still ran
    assert seen[1][1] >= 1.5
    assert api.wait(cid, timeout=30)["StatusCode"] == 0
    assert api.inspect_container(cid)["State"]["ExitCode"] == 0
    assert api.inspect_container(marker.name)["Id"] == cid  # by name, too
    assert cid in {c["Id"] for c in api.containers(all=True)}
    api.remove_container(cid, v=True, force=True)
    with pytest.raises(NotFound):
        docker_api.inspect_container(cid)


def test_attach_passes_bytes_both_ways(api, marker):
    cid = api.create_container(
        TEST_IMAGE,
        ["sh", "-c", "read line; echo got:$line; echo err >&2"],
        user=USER,
        stdin_open=True,
        labels=marker.labels,
    )["Id"]
    api.start(cid)
    sock = api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
    sock._sock.sendall(b"hello proxy\n")
    frames = list(frames_iter(sock, tty=False))
    sock.close()
    assert (1, b"got:hello proxy\n") in frames
    assert (2, b"err\n") in frames
    assert api.wait(cid, timeout=30)["StatusCode"] == 0


def test_registry_login_to_a_registry_the_policy_names_is_passed_to_the_daemon(proxy):
    credentials = {"username": "u", "password": "p", "serveraddress": "127.0.0.1:1"}  # nothing listens there
    status, answer = raw(proxy, "POST", "/v1.41/auth", json.dumps(credentials).encode())
    assert status != 403 and not answer["message"].startswith("dood-proxy"), answer
    assert "127.0.0.1:1" in answer["message"]  # the daemon's own error: it tried that registry


def test_allowed_bind_mounts_work(api, proxy, marker):
    host_config = api.create_host_config(
        binds=[f"{proxy.allowed}/data:/data:ro", f"{proxy.allowed}/ro:/ro:ro"], network_mode="none"
    )
    cid = api.create_container(
        TEST_IMAGE, ["cat", "/data/hello.txt"], user=USER, labels=marker.labels, host_config=host_config
    )["Id"]
    api.start(cid)
    assert api.wait(cid, timeout=30)["StatusCode"] == 0
    assert api.logs(cid) == b"hello from the host\n"


def test_events_are_streamed_and_filtered_to_our_containers(api, docker_api, marker):
    # Both containers carry this test's marker; only the ownership label the proxy adds tells them apart.
    stream = api.events(decode=True, filters={"type": "container", "label": f"test.case={marker.value}"})
    received = []
    reader = threading.Thread(target=lambda: received.extend(_take_until(stream, "destroy")), daemon=True)
    reader.start()
    stranger = docker_api.create_container(TEST_IMAGE, ["true"], labels=marker.labels)["Id"]
    docker_api.start(stranger)
    ours = api.create_container(TEST_IMAGE, ["true"], user=USER, labels=marker.labels)["Id"]
    api.start(ours)
    api.wait(ours, timeout=30)
    docker_api.remove_container(stranger, force=True)
    api.remove_container(ours)
    reader.join(timeout=20)
    stream.close()
    assert not reader.is_alive(), f"the destroy event did not arrive; got {received}"
    assert {e["Actor"]["ID"] for e in received} == {ours}
    assert [e["Action"] for e in received] == ["create", "start", "die", "destroy"]
    assert all(e["Actor"]["Attributes"][MANAGED_LABEL] == "true" for e in received)


def _take_until(stream, action: str):
    for event in stream:
        yield event
        if event.get("Action") == action:
            return


def test_the_operator_runs_through_the_proxy(proxy, docker_api, tmp_path):
    """DoodContainerOperator pointed at the proxy (docker.url): same result, and the policy applies."""
    from airflow.sdk.bases.operator import ExecutorSafeguard

    from dood.config.model import DoodConfig
    from dood.exceptions import DoodError
    from dood.operators.container import DoodContainerOperator

    runs = proxy.allowed / "runs"
    runs.mkdir(exist_ok=True)
    config = tmp_path / "dood.yaml"
    config.write_text(f"docker:\n  url: {proxy.url}\nruns_root: {runs}\n")
    if "policy" in DoodConfig.model_fields:  # the operator checks the same policy before creating
        config.write_text(config.read_text() + f"policy:\n  allowed_host_roots: ['{proxy.allowed}']\n")

    def run(task_id, **kwargs):
        ti = SimpleNamespace(
            dag_id="dood_it_proxy", task_id=task_id, run_id=f"it__{uuid.uuid4().hex}", map_index=-1, try_number=1
        )
        context = {
            "ti": ti,
            "task_instance": ti,
            "run_id": ti.run_id,
            "logical_date": None,
            "data_interval_start": None,
            "data_interval_end": None,
        }
        operator = DoodContainerOperator(task_id=task_id, image=TEST_IMAGE, config_path=str(config), **kwargs)
        ctx = contextvars.copy_context()
        ctx.run(ExecutorSafeguard.tracker.set, operator)
        return ctx.run(operator.execute, context)

    script = 'echo hello; echo \'{"via": "proxy"}\' > "$DOOD_RESULT_FILE"'
    assert run("through_proxy", command=["sh", "-c", script]) == {"via": "proxy"}
    with pytest.raises((APIError, DoodError)) as caught:  # the proxy refuses it, or the operator first
        run("mounts_etc", command=["true"], mounts=["/etc:/host-etc:ro"])
    assert "'/etc' is or contains the system path /etc" in str(caught.value)
    assert (
        docker_api.containers(all=True, filters={"label": ["dood.dag_id=dood_it_proxy", "dood.task_id=mounts_etc"]})
        == []
    )


# --- review findings (issue 9): login SSRF, network inspect, block-IO paths, GPUs, bare LF, stream close ---


class Listener:
    """A TCP port on loopback that counts who connects (and hangs up on them at once)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.sock.accept()
            except OSError:  # a timeout: look at the stop flag again
                continue
            self.connections += 1
            connection.close()

    def close(self) -> int:
        time.sleep(0.5)  # a connection the daemon started is accepted by now
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
        return self.connections


def test_control_the_daemon_logs_in_wherever_the_body_says(docker_api):
    """Without the proxy, `POST /auth` makes the daemon connect to any address: a port scanner (SSRF)."""
    listener = Listener()
    connection = UnixHTTPConnection("/var/run/docker.sock")
    body = {"username": "u", "password": "p", "serveraddress": f"127.0.0.1:{listener.port}"}
    connection.request("POST", "/v1.41/auth", body=json.dumps(body), headers={"Content-Type": "application/json"})
    answer = connection.getresponse().read()
    connection.close()
    assert listener.close() >= 1, answer
    assert str(listener.port).encode() in answer  # the daemon's error tells what it reached


def test_registry_logins_anywhere_else_are_refused_before_the_daemon(proxy):
    listener = Listener()
    address = f"127.0.0.1:{listener.port}"
    attempts = [
        (403, {"username": "u", "password": "p", "serveraddress": address}),
        (403, {"username": "u", "password": "p", "serveraddress": f"https://{address}/v2/"}),
        (403, {"username": "u", "password": "p", "serveraddress": f"https://127.0.0.1:1@{address}/"}),
        (403, {"username": "u", "password": "p"}),  # Docker Hub, not named by the policy
    ]
    for expected, body in attempts:
        status, answer = raw(proxy, "POST", "/v1.41/auth", json.dumps(body).encode())
        assert status == expected, answer
        assert answer["message"].startswith("dood-proxy: registry login to"), answer
    # Two spellings of the field: Go would keep the last one, so the body is malformed.
    status, answer = raw(
        proxy, "POST", "/v1.41/auth", f'{{"serveraddress": "127.0.0.1:1", "ServerAddress": "{address}"}}'.encode()
    )
    assert status == 400 and "given twice" in answer["message"], answer
    assert listener.close() == 0  # the daemon never tried


def test_network_inspect_shows_only_dood_containers(api, proxy, docker_api, foreign, marker):
    ours = api.create_container(TEST_IMAGE, ["sleep", "30"], labels=marker.labels, user="1000:1000")["Id"]
    api.start(ours)
    direct = docker_api.inspect_network("bridge")
    assert {foreign.id, ours} <= set(direct["Containers"])  # both are on the bridge
    status, shown = raw(proxy, "GET", "/v1.41/networks/bridge?verbose=true")
    assert status == 200, shown
    assert shown["Id"] == direct["Id"] and shown["IPAM"] == direct["IPAM"]
    assert ours in shown["Containers"]
    for cid in shown["Containers"]:  # dood's, each of them (other tests' may be running, or gone by now)
        with contextlib.suppress(NotFound):
            assert docker_api.inspect_container(cid)["Config"]["Labels"].get(MANAGED_LABEL) == "true"
    assert foreign.id not in json.dumps(shown) and foreign.name not in json.dumps(shown)
    assert "Services" not in shown and "Peers" not in shown
    # Before API 1.28 the daemon lists every network's containers too.
    status, listed = raw(proxy, "GET", "/v1.27/networks")
    assert status == 200, listed
    assert foreign.id in json.dumps(raw(SimpleNamespace(socket="/var/run/docker.sock"), "GET", "/v1.27/networks")[1])
    bridge = next(network for network in listed if network["Name"] == "bridge")
    assert ours in bridge["Containers"]
    assert foreign.id not in json.dumps(listed)
    status, missing = raw(proxy, "GET", "/v1.41/networks/dood-it-no-such-network")
    assert status == 404 and "not found" in missing["message"]


@pytest.mark.parametrize(
    "field",
    ["BlkioWeightDevice", "BlkioDeviceReadBps", "BlkioDeviceWriteBps", "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps"],
)
def test_block_io_device_paths_are_refused_without_asking_the_daemon(proxy, marker, field):
    answers = []
    for path in ("/dev/null", "/dev/dood-it-does-not-exist"):
        entry = {"Path": path, "Weight": 10} if field == "BlkioWeightDevice" else {"Path": path, "Rate": 1}
        body = {"Image": TEST_IMAGE, "User": "1000:1000", "Labels": marker.labels, "HostConfig": {field: [entry]}}
        status, answer = raw(proxy, "POST", f"/v1.41/containers/create?name={marker.name}", json.dumps(body).encode())
        assert status == 403, answer
        assert f"HostConfig.{field}:" in answer["message"]
        answers.append(answer["message"])
    assert answers[0] == answers[1]  # the same answer whether the host file exists or not
    assert marker.created() == []


GPU_ATTACKS = {
    "nvidia_runtime_with_env": {"Env": ["NVIDIA_VISIBLE_DEVICES=all"], "HostConfig": {"Runtime": "nvidia"}},
    "nvidia_runtime": {"HostConfig": {"Runtime": "nvidia"}},
    "count_0_with_env": {
        "Env": ["NVIDIA_VISIBLE_DEVICES=all"],
        "HostConfig": {"DeviceRequests": [{"Count": 0, "Capabilities": [["gpu"]]}]},
    },
    "count_0": {"HostConfig": {"DeviceRequests": [{"Count": 0, "Capabilities": [["gpu"]]}]}},
    "count_all": {"HostConfig": {"DeviceRequests": [{"Count": -1, "Capabilities": [["gpu"]]}]}},
    "device_ids_joined": {"HostConfig": {"DeviceRequests": [{"DeviceIDs": ["0,1,2"], "Capabilities": [["gpu"]]}]}},
    "device_id_all": {"HostConfig": {"DeviceRequests": [{"DeviceIDs": ["all"], "Capabilities": [["gpu"]]}]}},
    "two_requests": {
        "HostConfig": {
            "DeviceRequests": [{"Count": 1, "Capabilities": [["gpu"]]}, {"DeviceIDs": ["1"], "Capabilities": [["gpu"]]}]
        }
    },
    "driver_capabilities_env": {
        "Env": ["NVIDIA_DRIVER_CAPABILITIES=all"],
        "HostConfig": {"DeviceRequests": [{"Count": 1, "Capabilities": [["gpu"]]}]},
    },
}


@contextlib.contextmanager
def own_proxy(root: Path, policy: str):
    """A proxy process of its own: its own policy, its stderr kept apart, stopped with SIGTERM."""
    root.mkdir(parents=True, exist_ok=True)
    config = root / "dood.yaml"
    config.write_text(policy)
    sock = root / "proxy.sock"
    stderr = root / "stderr.log"
    with stderr.open("wb") as err:
        command = [sys.executable, "-m", "dood.proxy", "--listen", f"unix://{sock}", "--config", str(config)]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 30
            while not sock.exists():
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"dood-proxy did not start: {stderr.read_text()}")
                time.sleep(0.05)
            yield SimpleNamespace(socket=str(sock), url=f"unix://{sock}", stderr=stderr)
        finally:
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def gpu_proxy(tmp_path_factory):
    policy = "policy:\n  allowed_images: ['dood-test-busybox:*']\n  allow_gpus: true\n  max_gpus: 1\n"
    with own_proxy(tmp_path_factory.mktemp("dood-gpu-proxy"), policy) as proxy:
        yield proxy


@pytest.mark.parametrize("attack", list(GPU_ATTACKS))
def test_gpus_beyond_max_gpus_are_refused(gpu_proxy, marker, attack):
    body = {"Image": TEST_IMAGE, "Cmd": ["true"], "User": "1000:1000", "Labels": marker.labels, **GPU_ATTACKS[attack]}
    status, answer = raw(gpu_proxy, "POST", f"/v1.41/containers/create?name={marker.name}", json.dumps(body).encode())
    assert status == 403, answer
    assert answer["message"].startswith("dood-proxy: the container breaks the dood policy"), answer
    assert "[gpu]" in answer["message"] or "[runtime]" in answer["message"]
    assert marker.created() == []


def test_a_bare_lf_request_gets_400_at_once(proxy, marker):
    create = json.dumps({"Image": TEST_IMAGE, "User": "1000:1000", "Labels": marker.labels}).encode()
    request = b"POST /v1.41/containers/create HTTP/1.1\nHost: docker\nContent-Length: %d\n\n" % len(create) + create
    started = time.monotonic()
    answer = send_bytes(proxy, request)  # the client keeps its side open: only the proxy's answer ends this
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"bare CR or LF" in answer
    assert time.monotonic() - started < 5
    assert marker.created() == []


def test_closing_a_followed_log_stream_leaves_no_task_behind(tmp_path, marker):
    with own_proxy(tmp_path / "proxy", "policy:\n  allowed_images: ['dood-test-busybox:*']\n") as own:
        client = docker.APIClient(base_url=own.url, version="auto", timeout=30)
        ticking = ["sh", "-c", "while true; do echo tick; sleep 0.1; done"]
        cid = client.create_container(TEST_IMAGE, ticking, labels=marker.labels, user="50000:0")["Id"]
        client.start(cid)
        stream = client.logs(cid, stream=True, follow=True)
        assert next(stream) == b"tick\n"
        stream.close()  # the client hangs up on a followed stream of a running container
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:  # and once more on the raw socket
            sock.settimeout(10)
            sock.connect(own.socket)
            sock.sendall(f"GET /v1.41/containers/{cid}/logs?follow=1&stdout=1 HTTP/1.1\r\nHost: d\r\n\r\n".encode())
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        time.sleep(1)
        follower = client.logs(cid, stream=True, follow=True)  # still open when the proxy stops
        next(follower)
        assert client.version()["ApiVersion"]  # a kept-alive connection, idle when the proxy stops
    client.close()
    errors = own.stderr.read_text()
    assert "dood-proxy listening" in errors and "dood-proxy stopped" in errors
    assert "Task was destroyed but it is pending" not in errors
    assert "Exception in callback" not in errors
    assert "Traceback" not in errors


def test_the_proxy_logged_its_refusals(proxy):
    log = Path(proxy.log).read_text()
    assert re.search(
        r"refuse POST /v1\.41/containers/create\S* -> 403 dood-proxy: the container breaks the dood policy", log
    )
    assert "Traceback" not in log
