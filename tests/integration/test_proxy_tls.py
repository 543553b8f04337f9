"""dood-proxy on TCP with mutual TLS, the way another Docker host's proxy is reached (docs/hosts.md).

Real certificates from `scripts/make-host-certs.sh`, a real proxy process (`--tls-listen`, `--host host-b`) in
front of the real engine: a client without a certificate, or with one another CA signed, is refused at the
handshake; the DoodHook (the provider's DockerHook TLS settings, from `hosts.host-b.docker`) is served, and
every container it creates carries `dood.host=host-b`, forced by the proxy. Containers of another host are
invisible and untouchable through it.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from pathlib import Path

import docker
import pytest
import requests
from docker.errors import APIError
from docker.tls import TLSConfig

from dood.config.model import parse_config
from dood.engine.client_tls import EndpointTLS
from dood.exceptions import DockerUnreachable
from dood.hooks.dood import DoodHook
from dood.naming import HOST_LABEL, MANAGED_LABEL, STACK_LABEL, TaskIdentity
from tests.integration.conftest import TEST_IMAGE
from tests.integration.proxy_process import remove_labelled, running_proxy
from tests.ports import free_port

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make-host-certs.sh"
IDENTITY = TaskIdentity(dag_id="dood_it_tls", task_id="train", run_id="manual__2026-12-01T00:00:00+00:00")
POLICY = "  allowed_images: ['dood-test-busybox:*']\n  allowed_users: ['50000:0', '1000:1000']\n"
STACK = "dood-it-tls"


def _make_certs(directory: Path, host: str) -> None:
    subprocess.run(["bash", str(SCRIPT), str(directory), host], check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    root = tmp_path_factory.mktemp("certs")
    _make_certs(root / "ours", "host-b")
    _make_certs(root / "strangers", "host-b")  # another CA: its client certificate must not get in
    return root


@pytest.fixture(scope="module")
def proxy(certs, tmp_path_factory, docker_api):
    port = free_port()
    ours = certs / "ours"
    args = [
        "--stack", STACK,
        "--host", "host-b",
        "--tls-listen", f"tcp://127.0.0.1:{port}",
        "--tls-cert", str(ours / "host-b" / "server-cert.pem"),
        "--tls-key", str(ours / "host-b" / "server-key.pem"),
        "--tls-ca-cert", str(ours / "ca.pem"),
    ]  # fmt: skip
    with running_proxy(tmp_path_factory.mktemp("proxy-tls"), POLICY, *args) as running:
        deadline = time.monotonic() + 30
        while True:  # the unix listener comes first; then the TLS one
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the TLS listener did not open: {running.log.read_text()}")
                time.sleep(0.05)
        running.port = port
        yield running
    remove_labelled(docker_api, f"dood.dag_id={IDENTITY.dag_id}")


def _hook(proxy, certs: Path, client: str = "ours") -> DoodHook:
    """The hook a worker on another machine uses: hosts.host-b.docker with the client's certificate."""
    files = certs / client / "client"
    endpoint = {
        "url": f"tcp://127.0.0.1:{proxy.port}",
        "tls_ca_cert": str(certs / "ours" / "ca.pem"),  # the server is checked against our CA in every case
        "tls_client_cert": str(files / "cert.pem"),
        "tls_client_key": str(files / "key.pem"),
    }
    config = parse_config(
        {"hosts": {"host-b": {"docker": endpoint}}, "mount_discovery": {"mode": "off"}, "stack": STACK}
    ).on_host("host-b")
    return DoodHook(config)


def test_a_client_without_a_certificate_is_refused_at_the_handshake(proxy, certs):
    context = ssl.create_default_context(cafile=str(certs / "ours" / "ca.pem"))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
                assert tls.recv(1024) == b"", "the proxy answered a client that showed no certificate"
                raise ConnectionError("closed without an answer")
    ca = str(certs / "ours" / "ca.pem")
    no_cert = docker.APIClient(
        base_url=f"https://127.0.0.1:{proxy.port}",
        version="1.41",
        tls=EndpointTLS.of(TLSConfig(ca_cert=ca, verify=ca)),  # the server is verified; the proxy asks a cert
        timeout=10,
    )
    with pytest.raises(requests.exceptions.ConnectionError) as caught:  # the SDK's SSLError is one
        no_cert.ping()
    assert "CERTIFICATE_VERIFY_FAILED" not in str(caught.value)  # refused by the proxy, not by our own check


def test_a_client_certificate_from_another_ca_is_refused(proxy, certs):
    """The same hook as the served one below, with a certificate another CA signed: the proxy hangs up."""
    with pytest.raises(DockerUnreachable, match=f"No Docker daemon answers at tcp://127.0.0.1:{proxy.port}"):
        _hook(proxy, certs, client="strangers").api.ping()


def test_plain_http_on_the_tls_port_gets_nothing(proxy):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
        raw.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
        assert b"OK" not in raw.recv(1024)


def test_the_hook_with_the_client_certificate_is_served_and_its_containers_carry_the_host(proxy, certs, docker_api):
    api = _hook(proxy, certs).api
    assert api.ping() is True
    forged = {**IDENTITY.labels(), HOST_LABEL: "host-a"}  # the proxy's host wins over what the client says
    container = api.create_container(TEST_IMAGE, ["sleep", "60"], user="1000:1000", labels=forged)["Id"]
    api.start(container)  # attach-free calls through TLS: start, inspect, logs, stop, remove
    labels = docker_api.inspect_container(container)["Config"]["Labels"]
    assert (labels[HOST_LABEL], labels[STACK_LABEL], labels[MANAGED_LABEL]) == ("host-b", STACK, "true")
    assert container in {c["Id"] for c in api.containers(all=True)}
    api.stop(container, timeout=1)
    api.remove_container(container)
    with pytest.raises(docker.errors.NotFound):
        docker_api.inspect_container(container)


def test_another_host_s_containers_are_invisible_and_untouchable(proxy, certs, docker_api):
    """Same stack, same engine (as in this test), another host's label: through host-b's proxy it is not there."""
    labels = {**IDENTITY.labels(), STACK_LABEL: STACK, HOST_LABEL: "host-a"}
    theirs = docker_api.create_container(TEST_IMAGE, ["sleep", "60"], labels=labels)["Id"]
    api = _hook(proxy, certs).api
    try:
        assert theirs not in {c["Id"] for c in api.containers(all=True)}
        with pytest.raises(APIError) as caught:
            api.remove_container(theirs, force=True)
        assert caught.value.status_code == 403
        assert "another Docker host, not 'host-b'" in caught.value.explanation
        assert docker_api.inspect_container(theirs)["Id"] == theirs  # untouched
    finally:
        docker_api.remove_container(theirs, force=True)
