"""dood-proxy's listeners (`--listen`, `--tls-listen`) and its server TLS context, without a daemon: what is
refused, and that the context asks clients for a certificate. (Against a real engine: tests/integration/
test_proxy_tls.py.)"""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from dood.proxy.__main__ import _listeners, _parser, main
from dood.proxy.server_tls import server_context

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "make-host-certs.sh"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    root = tmp_path_factory.mktemp("certs")
    subprocess.run(["bash", str(SCRIPT), str(root), "host-b"], check=True, capture_output=True)
    return root


def listeners(*argv: str):
    return _listeners(_parser().parse_args(list(argv)))


def test_the_certificate_script_makes_a_ca_a_server_and_a_client_certificate(certs):
    for path in ("ca.pem", "host-b/server-cert.pem", "host-b/server-key.pem", "client/cert.pem", "client/key.pem"):
        assert (certs / path).stat().st_size > 0, path
    for key in ("ca-key.pem", "host-b/server-key.pem", "client/key.pem"):
        assert (certs / key).stat().st_mode & 0o077 == 0, f"{key} is readable by others"
    text = subprocess.run(
        ["openssl", "x509", "-in", str(certs / "host-b/server-cert.pem"), "-noout", "-text"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "DNS:host-b" in text and "IP Address:127.0.0.1" in text and "TLS Web Server Authentication" in text


def test_the_server_context_requires_client_certificates(certs):
    context = server_context(
        cert=str(certs / "host-b/server-cert.pem"),
        key=str(certs / "host-b/server-key.pem"),
        client_ca=str(certs / "ca.pem"),
    )
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_an_unreadable_certificate_is_named(certs, tmp_path):
    with pytest.raises(ValueError, match=r"--tls-ca-cert .*missing\.pem: cannot load the clients' CA"):
        server_context(
            cert=str(certs / "host-b/server-cert.pem"),
            key=str(certs / "host-b/server-key.pem"),
            client_ca=str(tmp_path / "missing.pem"),
        )
    with pytest.raises(ValueError, match="cannot load the proxy's certificate"):
        server_context(cert=str(tmp_path / "no.pem"), key=str(tmp_path / "no.pem"), client_ca=str(certs / "ca.pem"))


def test_listeners_plain_and_tls(certs):
    tls = ["--tls-cert", str(certs / "host-b/server-cert.pem"), "--tls-key", str(certs / "host-b/server-key.pem")]
    tls += ["--tls-ca-cert", str(certs / "ca.pem")]
    found = listeners("--listen", "tcp://127.0.0.1:2375", "--tls-listen", "tcp://0.0.0.0:2376", *tls)
    assert [(str(endpoint), context is not None) for endpoint, context in found] == [
        ("tcp://127.0.0.1:2375", False),
        ("tcp://0.0.0.0:2376", True),
    ]


@pytest.mark.parametrize("url", ["tcp://0.0.0.0:2375", "tcp://172.17.0.1:2375", "tcp://[::]:2375", "tcp://proxy:2375"])
def test_plain_tcp_beyond_loopback_is_refused_without_the_flag(url):
    """A step's container on a bridge reaches 0.0.0.0 or docker0's address: it could launch containers."""
    with pytest.raises(ValueError, match=r"TCP without TLS on an address other than loopback.*add --allow-plain-tcp"):
        listeners("--listen", url)
    with pytest.raises(ValueError, match="could read dood's containers and their logs"):
        listeners("--read-only", "--listen", url)
    assert len(listeners("--listen", url, "--allow-plain-tcp")) == 1


@pytest.mark.parametrize(
    "url", ["tcp://127.0.0.1:2375", "tcp://127.0.0.2:2375", "tcp://[::1]:2375", "tcp://localhost:2375", "unix:///s"]
)
def test_loopback_and_unix_listeners_need_no_flag(url):
    assert len(listeners("--listen", url)) == 1


def test_the_plain_tcp_refusal_stops_the_proxy_before_it_listens(capsys):
    assert main(["--listen", "tcp://0.0.0.0:2375"]) == 2
    assert "--allow-plain-tcp" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "give at least one --listen or --tls-listen"),
        (("--tls-listen", "tcp://0.0.0.0:2376"), "--tls-listen needs --tls-cert, --tls-key, --tls-ca-cert"),
        (("--listen", "tcp://127.0.0.1:2375", "--tls-cert", "c.pem"), "are for --tls-listen, and none is given"),
    ],
)
def test_listener_mistakes_are_refused(argv, message):
    with pytest.raises(ValueError, match=message):
        listeners(*argv)


def test_tls_on_a_unix_socket_is_refused(certs):
    files = ["--tls-cert", str(certs / "host-b/server-cert.pem"), "--tls-key", str(certs / "host-b/server-key.pem")]
    with pytest.raises(ValueError, match="TLS listens on tcp://HOST:PORT"):
        listeners("--tls-listen", "unix:///tmp/x.sock", *files, "--tls-ca-cert", str(certs / "ca.pem"))


def test_a_bad_host_name_stops_the_proxy_before_it_listens(capsys):
    assert main(["--listen", "unix:///tmp/dood-never.sock", "--host", "Bad Host"]) == 2
    assert "--host 'Bad Host' must match" in capsys.readouterr().err
