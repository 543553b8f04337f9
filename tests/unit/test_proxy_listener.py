"""dood-proxy's listeners (dood.proxy.listener) on real local sockets, without a daemon: connections that have
not yet sent a first request are bounded per listener and per peer, a TLS handshake has a deadline, the
listener stops accepting at `max_connections`, and what ended connections leave is reclaimed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import stat
import subprocess
import time
import weakref
from pathlib import Path

import pytest

from dood.proxy import listener as listener_module
from dood.proxy.listener import Limits, Listener, bind_tcp, bind_unix
from dood.proxy.tls import server_context

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make-host-certs.sh"


async def _echo_first_line(reader, writer, *, on_first_request):
    """A stand-in for ProxyServer.handle: a first line is a first request; then hold until the client leaves."""
    try:
        if await reader.readline():
            on_first_request()
            writer.write(b"ok\n")
            await writer.drain()
            await reader.read()
    finally:
        writer.close()


async def _until(condition, what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds} s for {what}")
        await asyncio.sleep(0.01)


async def _closed_by_server(reader: asyncio.StreamReader, seconds: float = 10.0) -> bool:
    """True once the server closed (EOF or reset) within `seconds`; False if it still holds the connection."""
    try:
        return await asyncio.wait_for(reader.read(1), seconds) == b""
    except ConnectionError:
        return True
    except asyncio.TimeoutError:
        return False


async def _started(limits: Limits, tls: ssl.SSLContext | None = None) -> tuple[Listener, int]:
    sockets = await bind_tcp("127.0.0.1", 0)
    server = Listener(sockets, _echo_first_line, name="test", tls=tls, limits=limits).start()
    return server, sockets[0].getsockname()[1]


async def _connect(port: int, source: str):
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


def test_limits_must_nest():
    with pytest.raises(ValueError, match="max_pending_per_peer <= max_pending <= max_connections"):
        Limits(max_connections=10, max_pending=20)
    with pytest.raises(ValueError, match="connection limits"):
        Limits(max_pending=4, max_pending_per_peer=8)


def test_max_connections_shrinks_the_pending_bounds_with_it():
    assert Limits.of(2048) == Limits(max_connections=2048)
    small = Limits.of(16)
    assert (small.max_connections, small.max_pending, small.max_pending_per_peer) == (16, 16, 16)
    with pytest.raises(ValueError, match="--max-connections 0: give at least 1"):
        Limits.of(0)


def test_pending_connections_are_bounded_per_peer_and_per_listener():
    async def scenario():
        server, port = await _started(Limits(max_connections=16, max_pending=4, max_pending_per_peer=2))
        opened = []
        try:
            for _ in range(2):
                opened.append(await _connect(port, "127.0.0.2"))
            await _until(lambda: server.pending == 2, "two pending connections from 127.0.0.2")
            third_reader, third_writer = await _connect(port, "127.0.0.2")
            opened.append((third_reader, third_writer))
            assert await _closed_by_server(third_reader), "a third pending connection from one peer was kept"
            for _ in range(2):
                opened.append(await _connect(port, "127.0.0.3"))
            await _until(lambda: server.pending == 4, "four pending connections")
            other_reader, other_writer = await _connect(port, "127.0.0.4")
            opened.append((other_reader, other_writer))
            assert await _closed_by_server(other_reader), "a fifth pending connection was kept (listener cap 4)"
            assert server.pending == 4
            # A connection that sends its first request is no longer pending: 127.0.0.2 may open another.
            first_reader, first_writer = opened[0]
            first_writer.write(b"GET /_ping HTTP/1.1\r\n")
            assert await first_reader.readline() == b"ok\n"
            await _until(lambda: server.pending == 3, "the served connection to leave the pending count")
            again_reader, again_writer = await _connect(port, "127.0.0.2")
            opened.append((again_reader, again_writer))
            await _until(lambda: server.pending == 4, "the new connection from 127.0.0.2 to be held")
            assert not await _closed_by_server(again_reader, 0.2)
        finally:
            for _, writer in opened:
                writer.close()
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


def test_beyond_max_connections_the_listener_stops_accepting_until_one_ends():
    async def scenario():
        server, port = await _started(Limits(max_connections=2, max_pending=2, max_pending_per_peer=2))
        served = []
        try:
            for source in ("127.0.0.2", "127.0.0.3"):
                reader, writer = await _connect(port, source)
                writer.write(b"first request\n")
                assert await reader.readline() == b"ok\n"
                served.append((reader, writer))
            assert server.active == 2 and server.pending == 0
            waiting_reader, waiting_writer = await _connect(port, "127.0.0.4")  # the kernel's backlog takes it
            waiting_writer.write(b"first request\n")
            assert not await _closed_by_server(waiting_reader, 0.3), "answered beyond max_connections"
            assert server.active == 2
            served[0][1].close()  # one ends: the waiting one is accepted and served, not refused
            assert await asyncio.wait_for(waiting_reader.readline(), 10) == b"ok\n"
            served.append((waiting_reader, waiting_writer))
        finally:
            for _, writer in served:
                writer.close()
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory):
    root = tmp_path_factory.mktemp("certs")
    subprocess.run(["bash", str(SCRIPT), str(root), "host-b"], check=True, capture_output=True)
    return server_context(
        cert=str(root / "host-b/server-cert.pem"),
        key=str(root / "host-b/server-key.pem"),
        client_ca=str(root / "ca.pem"),
    )


def test_a_tls_handshake_that_does_not_finish_is_closed_and_reclaimed(tls_context, monkeypatch):
    reclaimed = []
    monkeypatch.setattr(listener_module, "RECLAIM_SECONDS", 0.05)
    monkeypatch.setattr(listener_module, "reclaim_memory", lambda: reclaimed.append(time.monotonic()))

    async def scenario():
        limits = Limits(max_connections=8, max_pending=4, max_pending_per_peer=4, handshake_seconds=0.5)
        server, port = await _started(limits, tls=tls_context)
        try:
            reader, writer = await _connect(port, "127.0.0.2")  # sends nothing: no ClientHello
            began = time.monotonic()
            await _until(lambda: server.pending == 1, "the silent connection to be held")
            assert await _closed_by_server(reader, 10), "the handshake had no deadline"
            assert time.monotonic() - began < 5
            writer.close()
            await _until(lambda: server.pending == 0 and reclaimed, "the pending count to drop and a reclaim")
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


def test_reclaim_memory_collects_cycles():
    class Cycle:
        pass

    collected = []
    cycle = Cycle()
    cycle.me = cycle
    weakref.finalize(cycle, collected.append, True)
    del cycle
    listener_module.reclaim_memory()
    assert collected == [True]


def test_a_unix_socket_appears_listening_and_with_its_mode(tmp_path):
    """Made aside and renamed into place: whoever waits for the path to exist connects at once (no race with
    listen) and never finds it with the umask's mode."""
    path = str(tmp_path / "proxy.sock")
    (tmp_path / "proxy.sock.new").touch()  # not a socket: left alone, and the bind fails loudly
    with pytest.raises(OSError):
        bind_unix(path, 0o660)
    assert not os.path.exists(path)
    os.unlink(tmp_path / "proxy.sock.new")
    sock = bind_unix(path, 0o660)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        assert not os.path.exists(path + ".new")
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
    finally:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
