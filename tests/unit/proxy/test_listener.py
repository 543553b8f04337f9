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
from dood.proxy.listener import Limits, Listener, bind_tcp, bind_unix, peer_of
from dood.proxy.server_tls import server_context

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "make-host-certs.sh"


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


def server_context_of(certs: Path) -> ssl.SSLContext:
    return server_context(
        cert=str(certs / "host-b/server-cert.pem"),
        key=str(certs / "host-b/server-key.pem"),
        client_ca=str(certs / "ca.pem"),
    )


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


def test_a_peer_beyond_its_bound_loses_its_own_oldest_pending_connection():
    async def scenario():
        server, port = await _started(Limits(max_connections=16, max_pending=8, max_pending_per_peer=2))
        opened = []
        try:
            for source in ("127.0.0.2", "127.0.0.2", "127.0.0.3"):
                opened.append(await _connect(port, source))
            await _until(lambda: server.pending == 3, "three pending connections")
            opened.append(await _connect(port, "127.0.0.2"))  # a third from 127.0.0.2: its oldest makes room
            assert await _closed_by_server(opened[0][0]), "127.0.0.2's oldest pending connection was kept"
            await _until(lambda: server.pending_of("127.0.0.2") == 2, "127.0.0.2 back at its bound of 2")
            for reader, _ in opened[1:]:
                assert not await _closed_by_server(reader, 0.1), "another pending connection was closed"
            assert server.evicted == 1
            # A connection that sends its first request is no longer pending, and no longer closed for room.
            second_reader, second_writer = opened[1]
            second_writer.write(b"GET /_ping HTTP/1.1\r\n")
            assert await second_reader.readline() == b"ok\n"
            await _until(lambda: server.pending_of("127.0.0.2") == 1, "the served one to leave the pending count")
            for _ in range(3):
                opened.append(await _connect(port, "127.0.0.2"))
            await _until(lambda: server.evicted == 3, "two more of 127.0.0.2's pending connections to be closed")
            assert server.pending_of("127.0.0.2") == 2
            assert not await _closed_by_server(second_reader, 0.1), "a served connection was closed for room"
        finally:
            for _, writer in opened:
                writer.close()
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


def test_a_full_listener_closes_the_oldest_pending_connection_of_the_peer_holding_the_most():
    async def scenario():
        server, port = await _started(Limits(max_connections=16, max_pending=4, max_pending_per_peer=3))
        opened = {}
        try:
            for name, source in (("a1", "127.0.0.2"), ("b1", "127.0.0.3"), ("a2", "127.0.0.2"), ("a3", "127.0.0.2")):
                opened[name] = await _connect(port, source)
                count = len(opened)
                await _until(lambda: server.pending == count, f"{count} pending connections")  # noqa: B023
            opened["c1"] = await _connect(port, "127.0.0.4")  # full: 127.0.0.2 holds the most, its oldest goes
            assert await _closed_by_server(opened["a1"][0]), "the heaviest peer's oldest connection was kept"
            for name in ("b1", "a2", "a3", "c1"):
                assert not await _closed_by_server(opened[name][0], 0.1), f"{name} was closed"
            opened["c2"] = await _connect(port, "127.0.0.4")  # 127.0.0.2 still holds the most (2)
            assert await _closed_by_server(opened["a2"][0]), "the heaviest peer's oldest connection was kept"
            opened["b2"] = await _connect(port, "127.0.0.3")  # now 127.0.0.4 holds the most (2)
            assert await _closed_by_server(opened["c1"][0]), "the heaviest peer's oldest connection was kept"
            opened["d1"] = await _connect(port, "127.0.0.5")  # 127.0.0.3 holds the most (2)
            assert await _closed_by_server(opened["b1"][0]), "the heaviest peer's oldest connection was kept"
            # a3, c2, b2, d1: four peers holding one each. Of equals, the one holding the oldest loses it.
            opened["e1"] = await _connect(port, "127.0.0.6")
            assert await _closed_by_server(opened["a3"][0]), "of peers holding as many, the oldest was kept"
            for name in ("c2", "b2", "d1", "e1"):
                assert not await _closed_by_server(opened[name][0], 0.1), f"{name} was closed"
            assert server.pending == 4 and server.evicted == 5
        finally:
            for _, writer in opened.values():
                writer.close()
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    root = tmp_path_factory.mktemp("certs")
    subprocess.run(["bash", str(SCRIPT), str(root), "host-b"], check=True, capture_output=True)
    return root


@pytest.fixture(scope="module")
def tls_context(certs):
    return server_context_of(certs)


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_a_client_is_served_while_idle_connections_from_several_addresses_keep_the_listener_full(tls, certs):
    """F4: connections that never send a byte, from three addresses, reopened as soon as they are closed,
    more than the listener holds; a client from a fourth address (with a certificate) connects and asks 50 times."""
    context = None
    if tls:
        context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        context.load_cert_chain(str(certs / "client/cert.pem"), str(certs / "client/key.pem"))

    async def scenario():
        limits = Limits(max_connections=64, max_pending=8, max_pending_per_peer=4)
        server, port = await _started(limits, tls=server_context_of(certs) if tls else None)
        stop = asyncio.Event()
        reopened = 0

        async def flood(source: str) -> None:
            nonlocal reopened
            while not stop.is_set():
                try:
                    reader, writer = await _connect(port, source)
                except OSError:
                    continue
                try:
                    await _closed_by_server(reader, 1)
                finally:
                    writer.close()
                reopened += 1

        flooders = [asyncio.create_task(flood(source)) for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4") * 4]
        try:
            await _until(lambda: server.evicted > 50, "the flood to fill the listener and be closed for room")
            answered = 0
            for _ in range(50):
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=context, server_hostname="localhost" if tls else None
                )
                try:
                    writer.write(b"GET /_ping HTTP/1.1\r\n")
                    answered += await asyncio.wait_for(reader.readline(), 5) == b"ok\n"
                except (ConnectionError, asyncio.TimeoutError):
                    pass
                finally:
                    writer.close()
            assert answered == 50, f"{answered} of 50 answered while the flood reopened {reopened} connections"
            assert server.pending <= 8
        finally:
            stop.set()
            for task in flooders:
                task.cancel()
            await asyncio.gather(*flooders, return_exceptions=True)
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


def test_a_unix_peer_is_its_uid_and_pid_and_an_ipv6_peer_its_network(tmp_path):
    path = str(tmp_path / "peer.sock")
    listening = bind_unix(path, 0o600)
    try:
        listening.setblocking(True)
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
            conn, address = listening.accept()
            with conn:
                assert peer_of(conn, address) == (f"uid {os.getuid()}", f"pid {os.getpid()}")
    finally:
        listening.close()
    with socket.socket(socket.AF_INET6) as six:
        assert peer_of(six, ("2001:db8:1:2:3::4", 5, 0, 0)) == ("2001:db8:1:2::/64", "2001:db8:1:2:3::4")
        assert peer_of(six, ("fe80::1%eth0", 5, 0, 2)) == ("fe80::/64", "fe80::1%eth0")
        assert peer_of(six, ("::ffff:10.0.0.1", 5, 0, 0)) == ("::ffff:10.0.0.1", "::ffff:10.0.0.1")
    with socket.socket() as four:
        assert peer_of(four, ("10.0.0.1", 5)) == ("10.0.0.1", "10.0.0.1")


def test_with_every_slot_held_a_newcomer_takes_the_place_of_a_pending_connection():
    async def scenario():
        server, port = await _started(Limits(max_connections=2, max_pending=2, max_pending_per_peer=2))
        opened = []
        try:
            served_reader, served_writer = await _connect(port, "127.0.0.2")
            opened.append((served_reader, served_writer))
            served_writer.write(b"first request\n")
            assert await served_reader.readline() == b"ok\n"
            opened.append(await _connect(port, "127.0.0.3"))
            await _until(lambda: server.active == 2 and server.pending == 1, "one served and one pending")
            opened.append(await _connect(port, "127.0.0.4"))
            assert await _closed_by_server(opened[1][0]), "the pending connection kept its slot"
            await _until(lambda: server.pending_of("127.0.0.4") == 1, "the newcomer to hold the freed slot")
            assert not await _closed_by_server(served_reader, 0.1), "the served connection was closed"
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
