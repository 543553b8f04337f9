"""dood-proxy's listeners against unauthenticated clients, as a real process (uid 50001 with the socket's group, as
compose runs it) in front of the real engine: a flood of half-handshaken TLS connections is bounded (per peer),
closed at the handshake deadline and its memory given back, while a client with a certificate is served; idle
connections reopened as fast as they are closed, more than the listener holds, do not lock real clients out
(F4: on the unix socket from one process of the same uid, on TLS from three addresses); a connection that sends
no request is closed long before a served keep-alive one; plain TCP beyond loopback is refused unless forced."""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.integration.proxy_process import PROXY_GID, PROXY_UID, UnixHTTPConnection, as_proxy_user, running_proxy
from tests.ports import free_port, wait_for_port

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make-host-certs.sh"
FLOODER = Path(__file__).resolve().parent / "flooder.py"
POLICY = "  allowed_images: ['dood-test-busybox:*']\n"
PER_PEER = 64  # dood.proxy.listener.Limits.max_pending_per_peer
FLOOD = 200
FLOOD_SOURCE = "127.0.0.2"  # the real client comes from 127.0.0.1: the proxy bounds each peer apart


@pytest.fixture
def root():
    """A directory uid 50001 can reach (pytest's own tmp is 0700): certificates, the proxy's socket and log."""
    made = Path(tempfile.mkdtemp(prefix="dood-it-listeners-", dir="/tmp"))
    made.chmod(0o755)
    yield made
    shutil.rmtree(made, ignore_errors=True)


@pytest.fixture
def certs(root):
    directory = root / "certs"
    subprocess.run(["bash", str(SCRIPT), str(directory), "host-b"], check=True, capture_output=True)
    for path in [directory, *directory.rglob("*")]:
        os.chown(path, PROXY_UID, PROXY_GID)  # the proxy reads its key
    return directory


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def _client_hello(certs: Path) -> bytes:
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def _ping(port: int, certs: Path, timeout: float = 10) -> bytes:
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    context.load_cert_chain(str(certs / "client" / "cert.pem"), str(certs / "client" / "key.pem"))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
    return answer


def _closed(sock: socket.socket) -> bool:
    """The proxy closed it (EOF or reset); False while it still holds it (what it sent is read and dropped)."""
    sock.setblocking(False)
    try:
        while select.select([sock], [], [], 0)[0]:
            if not sock.recv(65536):
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True
    return False


def _until(condition, what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {seconds} s for {what}")
        time.sleep(0.1)


def test_half_handshaken_connections_are_bounded_closed_and_their_memory_returned(root, certs):
    port = free_port()
    args = [
        "--tls-listen", f"tcp://127.0.0.1:{port}",
        "--tls-cert", str(certs / "host-b" / "server-cert.pem"),
        "--tls-key", str(certs / "host-b" / "server-key.pem"),
        "--tls-ca-cert", str(certs / "ca.pem"),
    ]  # fmt: skip
    with running_proxy(root, POLICY, *args, uid=PROXY_UID) as proxy:
        wait_for_port(port, proxy.log)
        assert _ping(port, certs).startswith(b"HTTP/1.1 200")
        pid = proxy.process.pid
        _until(lambda: _rss_mb(pid) > 0, "the proxy's RSS", 5)
        at_rest = _rss_mb(pid)
        hello = _client_hello(certs)
        flood = []
        try:
            for _ in range(FLOOD):
                sock = socket.socket()
                sock.settimeout(10)
                sock.bind((FLOOD_SOURCE, 0))
                flood.append(sock)
                try:
                    sock.connect(("127.0.0.1", port))
                    sock.sendall(hello)
                except ConnectionError:
                    pass  # refused at once: the reset came before the connect returned or the hello went out
            # Each one beyond the peer's bound closed one of its older ones: at most PER_PEER stay.
            _until(lambda: sum(not _closed(s) for s in flood) <= PER_PEER, f"at most {PER_PEER} held", 10)
            held = sum(not _closed(s) for s in flood)
            assert held > 0, "the proxy held none of the half-handshaken connections (nothing was measured)"
            with_flood = _rss_mb(pid)
            assert with_flood - at_rest < PER_PEER * 0.4 + 10, f"{at_rest:.0f} MB at rest, {with_flood:.0f} MB held"
            assert _ping(port, certs).startswith(b"HTTP/1.1 200"), "a client with a certificate was not served"
            # The handshake deadline (5 s) closes the rest; then what they held is collected and trimmed.
            _until(lambda: all(_closed(s) for s in flood), "the proxy to close every half-handshaken connection", 15)
        finally:
            for sock in flood:
                sock.close()
        _until(lambda: _rss_mb(pid) < at_rest + 5, f"RSS back within 5 MB of {at_rest:.0f} MB at rest", 30)
        assert _ping(port, certs).startswith(b"HTTP/1.1 200")
        assert "closed 1 connection(s) not yet past their first request to admit newer ones" in proxy.log.read_text()


def _answered(answer: bytes) -> bool:
    if not answer.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"answered {answer[:80]!r}")
    return True


class _Flood:
    """tests/integration/flooder.py running: idle connections held and reopened as the proxy closes them."""

    def __init__(self, *args: str, seconds: float) -> None:
        command = [sys.executable, str(FLOODER), *args, "--seconds", str(seconds)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        assert json.loads(self.process.stdout.readline()) == {"started": True}, "the flooder did not start"

    def stop(self) -> dict:
        self.process.terminate()
        out, _ = self.process.communicate(timeout=10)
        return json.loads(out.strip().splitlines()[-1])


def _served_while_flooded(ask, flood: _Flood, times: int, seconds: float) -> tuple[int, int, list[str]]:
    """Ask `times` (or until `seconds` are up: those not asked count as failed): (answered, asked, the first
    failures)."""
    answered = asked = 0
    failures: list[str] = []
    deadline = time.monotonic() + seconds
    try:
        while asked < times and time.monotonic() < deadline:
            asked += 1
            try:
                if ask():
                    answered += 1
            except (OSError, ssl.SSLError) as exc:
                if len(failures) < 5:
                    failures.append(repr(exc))
    finally:
        assert flood.process.poll() is None, "the flood ended before the client finished"
    return answered, asked, failures


def test_an_idle_flood_on_the_unix_socket_does_not_lock_clients_out(root):
    """F4 on the unix socket: one process (same uid as the client) holds 200 idle connections, reopened as the
    proxy closes them; the listener holds 128 pending in all and 64 per uid, and closes the flooder's own."""
    with running_proxy(root, POLICY, uid=PROXY_UID) as proxy:

        def ping() -> bool:
            connection = UnixHTTPConnection(proxy.socket, timeout=5)
            try:
                connection.request("GET", "/_ping")
                return connection.getresponse().status == 200
            finally:
                connection.close()

        assert ping()
        flood = _Flood("--unix", proxy.socket, "--per-source", "200", seconds=60)
        try:
            _until(lambda: "closed 1 connection(s) not yet past" in proxy.log.read_text(), "the flood to fill it", 10)
            began = time.monotonic()
            answered, asked, failures = _served_while_flooded(ping, flood, 100, 28)
            stats_seconds = round(time.monotonic() - began, 1)
        finally:
            stats = flood.stop()
        assert stats["closed_by_server"] > 100, f"the flood was not pressing: {stats}"
        print(
            f"unix flood: {answered} of {asked} pings answered in {stats_seconds} s under {stats}"
        )  # shown with pytest -s
        assert answered >= 95, f"{answered} of 100 pings answered ({asked} asked in 28 s) under {stats}: {failures}"
        assert f"from uid {os.getuid()}, the last closed one's" in proxy.log.read_text()


def test_idle_floods_from_three_addresses_on_tls_do_not_lock_certificate_holders_out(root, certs):
    """F4 on TLS, before any certificate: 64 idle connections from each of 127.0.0.2, .3 and .4 (192, more than
    the 128 the listener holds), reopened as the proxy closes them; a client with a certificate asks 100 times."""
    port = free_port()
    args = [
        "--tls-listen", f"tcp://127.0.0.1:{port}",
        "--tls-cert", str(certs / "host-b" / "server-cert.pem"),
        "--tls-key", str(certs / "host-b" / "server-key.pem"),
        "--tls-ca-cert", str(certs / "ca.pem"),
    ]  # fmt: skip
    with running_proxy(root, POLICY, *args, uid=PROXY_UID) as proxy:
        wait_for_port(port, proxy.log)
        assert _ping(port, certs).startswith(b"HTTP/1.1 200")
        sources = [arg for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4") for arg in ("--source", source)]
        flood = _Flood("--tcp", f"127.0.0.1:{port}", *sources, "--per-source", str(PER_PEER), seconds=60)
        try:
            _until(lambda: "closed 1 connection(s) not yet past" in proxy.log.read_text(), "the flood to fill it", 10)
            began = time.monotonic()
            answered, asked, failures = _served_while_flooded(
                lambda: _answered(_ping(port, certs, timeout=5)), flood, 100, 28
            )
            stats_seconds = round(time.monotonic() - began, 1)
        finally:
            stats = flood.stop()
        assert stats["closed_by_server"] > 64, f"the flood was not pressing: {stats}"
        print(
            f"TLS flood: {answered} of {asked} requests answered in {stats_seconds} s under {stats}"
        )  # shown with pytest -s
        assert answered >= 95, f"{answered} of 100 answered ({asked} asked in 28 s) under {stats}: {failures}"


def test_a_connection_without_a_request_is_closed_before_a_served_keep_alive_one(root):
    with running_proxy(root, POLICY, uid=PROXY_UID) as proxy:
        silent = socket.socket(socket.AF_UNIX)
        silent.connect(proxy.socket)
        served = socket.socket(socket.AF_UNIX)
        served.connect(proxy.socket)
        served.settimeout(10)
        try:
            served.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
            assert served.recv(65536).startswith(b"HTTP/1.1 200")
            began = time.monotonic()
            _until(lambda: _closed(silent), "the proxy to close a connection that sent no request", 20)
            assert time.monotonic() - began < 15
            assert not _closed(served), "a keep-alive connection was closed with the silent one"
            served.setblocking(True)
            served.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
            assert served.recv(65536).startswith(b"HTTP/1.1 200")
        finally:
            silent.close()
            served.close()


def test_plain_tcp_beyond_loopback_is_refused_at_start(root):
    port = free_port()
    config = root / "dood.yaml"
    config.write_text("policy:\n" + POLICY)
    os.chown(root, PROXY_UID, PROXY_GID)
    command = [sys.executable, "-m", "dood.proxy", "--listen", f"tcp://0.0.0.0:{port}", "--config", str(config)]
    command, env = as_proxy_user(command)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"--listen tcp://0.0.0.0:{port} is TCP without TLS" in done.stderr and "--allow-plain-tcp" in done.stderr
