"""dood-proxy's listening sockets: how many connections anyone who reaches a port may hold, and for how long.

A connection is *pending* from its accept until its first complete request head: on a mutual-TLS listener
that covers the handshake, where the client proves itself; on a unix socket or plain TCP, the wait for a
first request. Pending connections are what anyone who reaches the port can open, so they are bounded
(`Limits`):

* at most `max_pending` per listener and `max_pending_per_peer` per peer address at once: one more is
  accepted and closed at once (left in the kernel's backlog, a flood would queue ahead of real clients);
* the TLS handshake must end within `handshake_seconds`, and the first request head must follow within
  `server.FIRST_REQUEST_SECONDS` (`ProxyServer.handle`);
* at most `max_connections` connections per listener in all: beyond it the listener stops accepting (the
  kernel queues, clients wait) until one ends. Pending ones alone can never fill it.

What closed connections leave is given back. CPython 3.11's asyncio keeps a failed TLS handshake's buffers
(a 256 KB read buffer and OpenSSL's state, about 300 KB) in reference cycles until a full garbage collection
(python/cpython#109534), and glibc keeps freed heap pages: after a connection that never got past its first
request ends, one `gc.collect()` and `malloc_trim(0)` run within `RECLAIM_SECONDS` (at most one run per
`RECLAIM_SECONDS` per listener, about 20 ms each).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import gc
import logging
import os
import socket
import ssl
import stat
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from dood.proxy import wire

log = logging.getLogger("dood.proxy")

BACKLOG = 128
RECLAIM_SECONDS = 2.0
_REFUSAL_LOG_SECONDS = 10.0  # a flood is logged once per this, with the count, not once per connection

#: `handler(reader, writer, on_first_request=...)`: serves one connection; calls `on_first_request()` once its
#: first request head is read (the connection is then no longer pending).
Handler = Callable[..., Awaitable[None]]


@dataclass(frozen=True)
class Limits:
    """Per listener. The defaults hold a deployment's workers, triggerer and UI (tens of connections each)."""

    max_connections: int = 1024
    max_pending: int = 128
    max_pending_per_peer: int = 64
    handshake_seconds: float = 5.0
    tls_shutdown_seconds: float = 5.0  # how long a closing TLS connection waits for the client's close_notify

    @classmethod
    def of(cls, max_connections: int) -> Limits:
        """`--max-connections`: the pending bounds shrink with it when it is smaller than they are."""
        if max_connections < 1:
            raise ValueError(f"--max-connections {max_connections}: give at least 1")
        default = cls()
        return cls(
            max_connections=max_connections,
            max_pending=min(default.max_pending, max_connections),
            max_pending_per_peer=min(default.max_pending_per_peer, max_connections),
        )

    def __post_init__(self) -> None:
        if not 1 <= self.max_pending_per_peer <= self.max_pending <= self.max_connections:
            raise ValueError(
                "connection limits: need 1 <= max_pending_per_peer <= max_pending <= max_connections, got "
                f"{self.max_pending_per_peer}, {self.max_pending}, {self.max_connections}"
            )


def bind_unix(path: str, mode: int) -> socket.socket:
    """A listening unix socket at `path` with `mode`. It is made beside `path` and renamed into place once it
    listens with its mode: whoever waits for `path` to exist can connect at once, and never before the mode."""
    staged = f"{path}.new"
    if len(os.fsencode(staged)) >= 108:  # sun_path's size: no room for the suffix, bind in place
        staged = path
    elif os.path.exists(staged) and stat.S_ISSOCK(os.lstat(staged).st_mode):
        os.unlink(staged)  # left by a proxy that died while starting
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(staged)
    except BaseException:
        sock.close()
        raise
    try:
        os.chmod(staged, mode)
        sock.listen(BACKLOG)
        sock.setblocking(False)
        os.replace(staged, path)
    except BaseException:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(staged)  # ours: bound just now
        raise
    return sock


async def bind_tcp(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for every address `host` resolves to (as `asyncio.start_server` makes them)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen on {address!r}: {exc.strerror}") from None
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Listener:
    """Accepts on `sockets` within `limits` and hands each connection (TLS done, if `tls`) to `handler`.

    Like `asyncio.Server`: `sockets`, `close()`, `wait_closed()`. Closing stops accepting; connections in
    progress go on until they end or the loop stops."""

    def __init__(
        self,
        sockets: list[socket.socket],
        handler: Handler,
        *,
        name: str,
        tls: ssl.SSLContext | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.sockets = sockets
        self.name = name
        self.limits = limits or Limits()
        self._handler = handler
        self._tls = tls
        self._slots = asyncio.Semaphore(self.limits.max_connections)
        self._pending = 0
        self._pending_by_peer: Counter[str] = Counter()
        self._accepting: list[asyncio.Task[None]] = []
        self._connections: set[asyncio.Task[None]] = set()
        self._reclaim: asyncio.TimerHandle | None = None
        self._refused = 0
        self._refusals_logged_at = 0.0

    @property
    def active(self) -> int:
        """Connections held now (pending or not)."""
        return len(self._connections)

    @property
    def pending(self) -> int:
        return self._pending

    def start(self) -> Listener:
        loop = asyncio.get_running_loop()
        self._accepting = [loop.create_task(self._accept(sock)) for sock in self.sockets]
        return self

    def close(self) -> None:
        for task in self._accepting:
            task.cancel()
        for sock in self.sockets:
            sock.close()
        if self._reclaim is not None:
            self._reclaim.cancel()
            self._reclaim = None

    async def wait_closed(self) -> None:
        for task in self._accepting:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()  # all slots taken: stop accepting until a connection ends
            try:
                conn, address = await loop.sock_accept(sock)
            except OSError as exc:
                self._slots.release()
                if exc.errno in (errno.ECONNABORTED, errno.EAGAIN, errno.EINTR, errno.EPROTO):
                    continue
                # EMFILE, ENFILE, ENOBUFS, ENOMEM: out of descriptors or memory; give the others a moment
                log.warning("dood-proxy: accepting on %s failed (%s); retrying in 1 s", self.name, exc)
                await asyncio.sleep(1)
                continue
            except BaseException:
                self._slots.release()
                raise
            peer = address[0] if isinstance(address, tuple) else "unix"
            if self._pending >= self.limits.max_pending or (
                peer != "unix" and self._pending_by_peer[peer] >= self.limits.max_pending_per_peer
            ):
                self._slots.release()
                _drop(conn)
                self._note_refusal(peer)
                continue
            self._pending += 1
            self._pending_by_peer[peer] += 1
            task = loop.create_task(self._serve(conn, peer))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

    async def _serve(self, conn: socket.socket, peer: str) -> None:
        loop = asyncio.get_running_loop()
        pending = True
        owned = False  # once asyncio's transport holds `conn`, it closes it (here, a reused fd could be closed)

        def on_first_request() -> None:
            nonlocal pending
            if pending:
                pending = False
                self._end_pending(peer)

        reader = asyncio.StreamReader(limit=wire.MAX_HEAD_BYTES)
        protocol = asyncio.StreamReaderProtocol(reader)

        def protocol_factory() -> asyncio.StreamReaderProtocol:
            nonlocal owned
            owned = True  # called by asyncio right before it makes the transport over `conn`
            return protocol

        try:
            try:
                if self._tls is None:
                    transport, _ = await loop.connect_accepted_socket(protocol_factory, conn)
                else:
                    transport, _ = await loop.connect_accepted_socket(
                        protocol_factory,
                        conn,
                        ssl=self._tls,
                        ssl_handshake_timeout=self.limits.handshake_seconds,
                        ssl_shutdown_timeout=self.limits.tls_shutdown_seconds,
                    )
            except (OSError, EOFError) as exc:  # a failed or timed-out handshake, or the client gone
                log.debug("dood-proxy: a connection from %s to %s ended in its handshake: %r", peer, self.name, exc)
                return
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            await self._handler(reader, writer, on_first_request=on_first_request)
        except asyncio.CancelledError:
            pass  # the proxy is stopping
        except Exception:  # one broken connection must not take the listener down
            log.exception("dood-proxy: unexpected error on a connection to %s", self.name)
        finally:
            if not owned:
                conn.close()
            if pending:
                self._end_pending(peer)
                self._reclaim_soon()
            self._slots.release()

    def _end_pending(self, peer: str) -> None:
        self._pending -= 1
        self._pending_by_peer[peer] -= 1
        if self._pending_by_peer[peer] <= 0:
            del self._pending_by_peer[peer]

    def _note_refusal(self, peer: str) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._refusals_logged_at >= _REFUSAL_LOG_SECONDS:
            log.warning(
                "dood-proxy: %s: refused %d connection(s) that would have exceeded the limit of connections not yet "
                "past their first request (now %d of %d; %d of %d from %s, the last refused)",
                self.name,
                self._refused,
                self._pending,
                self.limits.max_pending,
                self._pending_by_peer[peer],
                self.limits.max_pending_per_peer,
                peer,
            )
            self._refused = 0
            self._refusals_logged_at = now

    def _reclaim_soon(self) -> None:
        if self._reclaim is None:
            self._reclaim = asyncio.get_running_loop().call_later(RECLAIM_SECONDS, self._reclaim_now)

    def _reclaim_now(self) -> None:
        self._reclaim = None
        reclaim_memory()


def reclaim_memory() -> None:
    """Free what reference cycles hold (closed TLS connections), then give glibc's free heap pages back."""
    gc.collect()
    _malloc_trim()


def _malloc_trim() -> None:
    trim = getattr(_libc(), "malloc_trim", None)  # glibc only (musl has none: nothing to do there)
    if trim is not None:
        trim(0)


_LIBC: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL | None:
    global _LIBC
    if _LIBC is None:
        with contextlib.suppress(OSError):
            _LIBC = ctypes.CDLL(None)
    return _LIBC


def _drop(conn: socket.socket) -> None:
    """Close at once with a reset: nothing is read or written, and no TIME_WAIT is left on our side."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
