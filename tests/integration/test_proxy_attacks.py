"""dood-proxy on the real engine: every attack is refused and creates nothing; dood's own calls still work.

The proxy runs as `python -m dood.proxy` on a temporary unix socket. Attacks use the raw docker SDK (or
raw HTTP), never the operator; what was or was not created is checked on the direct socket.
"""

from __future__ import annotations

import contextvars
import http.client
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

DAG_LABEL = {"dood.dag_id": "dood_it_proxy"}


# --- the proxy, and clients on both sides of it ---


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 30) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, docker_api):
    root = tmp_path_factory.mktemp("dood-proxy")
    allowed = root / "allowed"
    (allowed / "ro").mkdir(parents=True)
    (allowed / "data").mkdir()
    (allowed / "data" / "hello.txt").write_text("hello from the host\n")
    (allowed / "etc-link").symlink_to("/etc")
    config = root / "dood.yaml"
    config.write_text(
        "policy:\n"
        "  allowed_images: ['dood-test-busybox*']\n"
        f"  allowed_host_roots: ['{allowed}']\n"
        f"  read_only_host_roots: ['{allowed / 'ro'}']\n"
        "  resolve_symlinks: true\n"
    )
    sock = root / "proxy.sock"
    log = (root / "proxy.log").open("wb")
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "dood.proxy", "--listen", f"unix://{sock}", "--config", str(config)),
            *("--inspectable-label", "dood.role=airflow"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while not sock.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"dood-proxy did not start: {(root / 'proxy.log').read_text()}")
        time.sleep(0.05)
    yield SimpleNamespace(socket=str(sock), url=f"unix://{sock}", allowed=allowed, log=root / "proxy.log", root=root)
    process.terminate()
    process.wait(timeout=10)
    log.close()


@pytest.fixture(scope="module")
def api(proxy):
    """The raw docker SDK, talking to the proxy (API version negotiated through it)."""
    client = docker.APIClient(base_url=proxy.url, version="auto", timeout=60)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def cleanup(docker_api):
    yield
    for container in docker_api.containers(all=True, filters={"label": "dood.dag_id=dood_it_proxy"}):
        docker_api.remove_container(container["Id"], force=True)


@pytest.fixture
def marker(docker_api):
    """A unique label for this test's create attempts; `created()` lists what the daemon really made."""
    value = uuid.uuid4().hex[:12]

    def created():
        return docker_api.containers(all=True, filters={"label": f"dood.test_case={value}"})

    return SimpleNamespace(
        value=value, labels={**DAG_LABEL, "dood.test_case": value}, name=f"dood-it-proxy-{value}", created=created
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
        ("etc-link", "system-path"),  # a symlink under an allowed root, pointing at /etc
        ("../../../../../etc", "system-path"),
        ("ro", "bind-read-only"),  # a read-only root mounted read-write
    ],
)
def test_bind_escapes_are_refused(api, proxy, marker, source, rule):
    host_config = api.create_host_config(binds=[f"{proxy.allowed}/{source}:/x"])
    with pytest.raises(APIError) as caught:
        api.create_container(TEST_IMAGE, ["true"], name=marker.name, labels=marker.labels, host_config=host_config)
    assert_refused(caught, 403, f"[{rule}]")
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
    ours = api.create_container(TEST_IMAGE, ["sleep", "30"], labels=marker.labels)["Id"]
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
        name=marker.name,
        labels={"dood.test_case": marker.value, **DAG_LABEL},
    )
    cid = created["Id"]
    labels = docker_api.inspect_container(cid)["Config"]["Labels"]
    assert labels[MANAGED_LABEL] == "true"  # forced, though the client did not send it
    assert labels["dood.test_case"] == marker.value
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
        TEST_IMAGE, ["sh", "-c", "read line; echo got:$line; echo err >&2"], stdin_open=True, labels=marker.labels
    )["Id"]
    api.start(cid)
    sock = api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
    sock._sock.sendall(b"hello proxy\n")
    frames = list(frames_iter(sock, tty=False))
    sock.close()
    assert (1, b"got:hello proxy\n") in frames
    assert (2, b"err\n") in frames
    assert api.wait(cid, timeout=30)["StatusCode"] == 0


def test_registry_login_is_passed_to_the_daemon(proxy):
    credentials = {"username": "u", "password": "p", "serveraddress": "127.0.0.1:1"}  # nothing listens there
    status, answer = raw(proxy, "POST", "/v1.41/auth", json.dumps(credentials).encode())
    assert status != 403 and not answer["message"].startswith("dood-proxy"), answer
    assert "127.0.0.1:1" in answer["message"]  # the daemon's own error: it tried that registry


def test_allowed_bind_mounts_work(api, proxy, marker):
    host_config = api.create_host_config(
        binds=[f"{proxy.allowed}/data:/data", f"{proxy.allowed}/ro:/ro:ro"], network_mode="none"
    )
    cid = api.create_container(TEST_IMAGE, ["cat", "/data/hello.txt"], labels=marker.labels, host_config=host_config)[
        "Id"
    ]
    api.start(cid)
    assert api.wait(cid, timeout=30)["StatusCode"] == 0
    assert api.logs(cid) == b"hello from the host\n"


def test_events_are_streamed_and_filtered_to_our_containers(api, docker_api, marker):
    # Both containers carry this test's marker; only the ownership label the proxy adds tells them apart.
    stream = api.events(decode=True, filters={"type": "container", "label": f"dood.test_case={marker.value}"})
    received = []
    reader = threading.Thread(target=lambda: received.extend(_take_until(stream, "destroy")), daemon=True)
    reader.start()
    stranger = docker_api.create_container(TEST_IMAGE, ["true"], labels=marker.labels)["Id"]
    docker_api.start(stranger)
    ours = api.create_container(TEST_IMAGE, ["true"], labels=marker.labels)["Id"]
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

    from dood.config import DoodConfig
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


def test_the_proxy_logged_its_refusals(proxy):
    log = Path(proxy.log).read_text()
    assert re.search(
        r"refuse POST /v1\.41/containers/create\S* -> 403 dood-proxy: the container breaks the dood policy", log
    )
    assert "Traceback" not in log
