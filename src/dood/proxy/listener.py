"""dood-proxy's listening sockets: how many connections anyone who reaches a port may hold, and for how long.

A connection is *pending* from its accept until its first complete request head: on a mutual-TLS listener
that covers the handshake, where the client proves itself; on a unix socket or plain TCP, the wait for a
first request. Pending connections are what anyone who reaches the port can open, so they are bounded
(`Limits`), and a flood of them must not lock real clients out:

* at most `max_pending` per listener and `max_pending_per_peer` per peer at once. A newcomer beyond either
  is admitted and an older pending connection is closed (a reset) to make room: the oldest of the peer that
  holds the most (of the newcomer's own peer when that one is at its bound). A real client is pending for
  milliseconds (connect, handshake, head), and is never the one closed while another peer holds more than
  it does: to close it, a flood must come from as many peers as the listener holds, and open
  `max_pending` connections while it is pending. (Refusing newcomers instead, as before, let one client
  with `max_pending` idle connections lock everyone out.)
* a peer is the client's address on TCP (an IPv6 client's /64 network, one member per address), and its
  credentials on a unix socket (SO_PEERCRED: the uid, one member per pid; a client in another pid
  namespace shows pid 0). Within a peer, the member holding the most is closed first;
* the TLS handshake must end within `handshake_seconds` of the accept (no TLS state is made before the
  client's first bytes), and the first request head must follow within
  `server.FIRST_REQUEST_SECONDS` (`ProxyServer.handle`);
* at most `max_connections` connections per listener in all: when they are all past their first request,
  the listener stops accepting (the kernel queues, clients wait) until one ends; while some are pending, a
  newcomer takes the place of one of them as above.

What closed connections leave is given back. CPython 3.11's asyncio keeps a failed TLS handshake's buffers
(a 256 KB read buffer and OpenSSL's state, about 300 KB) in reference cycles until a full garbage collection
(python/cpython#109534), and glibc keeps freed heap pages: after a connection that never got past its first
request ends, one `gc.collect()` and `malloc_trim(0)` run within `RECLAIM_SECONDS` (at most one run per
`RECLAIM_SECONDS` per listener, about 20 ms each), or at once after `RECLAIM_AFTER` such connections with
TLS state. A TLS listener also fixes glibc's mmap threshold at its default (128 KB, `fix_mmap_threshold`):
each connection's 256 KB buffer is then mapped apart and unmapped when freed, instead of the threshold
rising after the first free and the buffers fragmenting the heap (seen: 64 held half-handshakes among 1,000
took 60 to 74 MB of RSS, and 60 MB every time once fixed).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import gc
import ipaddress
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

#: The kernel's queue of connections not yet accepted (capped by net.core.somaxconn, 4096 by default). A flood
#: that keeps more connections than the listener holds queues the rest here; while the queue has room, a real
#: client's connect gets in behind them (a unix connect to a full queue fails at once with EAGAIN).
BACKLOG = 4096
ACCEPT_BATCH = 64  # accepted at once from the queue before the loop serves anything else (measured: 16 let
# 1,000 queued half-handshakes from 3 addresses delay a real client 1.1 s, 64 kept it at 10 ms; and an idle flood
# reopened as fast as it is closed slowed a real request from ~20 ms with 1 to ~35 ms with 16, ~100 ms with 64)
RECLAIM_SECONDS = 2.0
RECLAIM_AFTER = 64  # TLS connections ended while pending: reclaim at once after this many (a fast flood)
_EVICTION_LOG_SECONDS = 10.0  # a flood is logged once per this, with the counts, not once per connection

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


class _Connection:
    """One accepted connection's bookkeeping: its peer, whether it is pending, whether it holds a slot."""

    __slots__ = ("conn", "evicted", "group", "member", "order", "owned", "pending", "slot", "started", "task")

    def __init__(self, conn: socket.socket, group: str, member: str, order: int) -> None:
        self.conn = conn
        self.group = group  # the peer the per-peer bound counts: an address, an IPv6 /64, a unix uid
        self.member = member  # within it: the address, the pid
        self.order = order  # accept order: lower is older
        self.started = False  # once its task runs, the task closes `conn` (or asyncio's transport does)
        self.owned = False  # once asyncio's transport holds `conn`, it closes it
        self.pending = True
        self.evicted = False
        self.slot = True
        self.task: asyncio.Task[None] | None = None


def peer_of(conn: socket.socket, address: object) -> tuple[str, str]:
    """(peer, member): the client's address (an IPv6 client's /64, then its address), or on a unix socket
    its credentials (SO_PEERCRED: the uid, then the pid)."""
    if isinstance(address, tuple):
        host = str(address[0])
        if conn.family == socket.AF_INET6:
            try:
                address_only = ipaddress.IPv6Address(host.split("%", 1)[0])
            except ValueError:
                return host, host
            if address_only.ipv4_mapped is None:  # a mapped IPv4 client is its own peer
                return str(ipaddress.IPv6Network((address_only, 64), strict=False)), host
        return host, host
    try:
        pid, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    except (OSError, AttributeError, struct.error):  # not Linux: one peer for the whole socket
        return "unix", "unix"
    return f"uid {uid}", f"pid {pid}"


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
        self._held = 0  # connections holding a slot (of max_connections)
        self._room_made = asyncio.Event()
        # Pending connections, per peer, per member, oldest first (dicts keep insertion order).
        self._pending_by_peer: dict[str, dict[str, dict[_Connection, None]]] = {}
        self._pending_count: Counter[str] = Counter()
        self._pending = 0
        self._accepted = 0
        self._accepting: list[asyncio.Task[None]] = []
        self._connections: set[asyncio.Task[None]] = set()
        self._reclaim: asyncio.TimerHandle | None = None
        self._unreclaimed = 0
        self._evicted = 0  # since the last log line
        self._evicted_total = 0
        self._evictions_logged_at = float("-inf")

    @property
    def active(self) -> int:
        """Connections held now (pending or not)."""
        return len(self._connections)

    @property
    def pending(self) -> int:
        return self._pending

    def pending_of(self, peer: str) -> int:
        """Pending connections of `peer` (as `peer_of` names it: an address, an IPv6 /64, `uid N`)."""
        return self._pending_count[peer]

    @property
    def evicted(self) -> int:
        """Pending connections closed to make room, since the listener started."""
        return self._evicted_total

    def start(self) -> Listener:
        loop = asyncio.get_running_loop()
        if self._tls is not None:
            fix_mmap_threshold()
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
            await self._room()  # not taken from the kernel's backlog while there is no room
            try:
                conn, address = await loop.sock_accept(sock)
            except OSError as exc:
                if exc.errno in (errno.ECONNABORTED, errno.EAGAIN, errno.EINTR, errno.EPROTO):
                    continue
                # EMFILE, ENFILE, ENOBUFS, ENOMEM: out of descriptors or memory; give the others a moment
                log.warning("dood-proxy: accepting on %s failed (%s); retrying in 1 s", self.name, exc)
                await asyncio.sleep(1)
                continue
            try:
                await self._room()  # connections may have got past their first request while accept waited
            except BaseException:
                conn.close()
                raise
            self._admit(conn, *peer_of(conn, address))
            self._accept_queued(sock)
            # sock_accept does not yield while the kernel's queue has connections: without this, a flood that
            # refills the queue as fast as it is closed keeps every other connection of the loop waiting.
            await asyncio.sleep(0)

    def _accept_queued(self, sock: socket.socket) -> None:
        """Take what the kernel's queue holds (up to ACCEPT_BATCH) before any of it is served: a flood's
        connections beyond its bounds are then closed before they cost a TLS handshake, and a real client
        queued behind them waits for accepts (microseconds each), not for their handshakes."""
        for _ in range(ACCEPT_BATCH):
            if self._held >= self.limits.max_connections and not self._pending:
                return
            try:
                conn, address = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # ECONNABORTED and the like; EMFILE...: the next sock_accept says so
            conn.setblocking(False)
            self._admit(conn, *peer_of(conn, address))

    async def _room(self) -> None:
        """Until a connection may be admitted: a slot is free, or one is held by a pending connection (whose
        place a newcomer may take)."""
        while self._held >= self.limits.max_connections and not self._pending:
            self._room_made.clear()
            await self._room_made.wait()

    def _admit(self, conn: socket.socket, group: str, member: str) -> None:
        victim = self._victim(group)
        if victim is not None:
            self._evict(victim)
        self._accepted += 1
        connection = _Connection(conn, group, member, self._accepted)
        self._held += 1
        self._pending += 1
        self._pending_count[group] += 1
        self._pending_by_peer.setdefault(group, {}).setdefault(member, {})[connection] = None
        task = asyncio.get_running_loop().create_task(self._serve(connection))
        connection.task = task
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)
        if victim is not None:
            self._note(victim.group)

    def _victim(self, group: str) -> _Connection | None:
        """The pending connection to close so that one more from `group` fits, or None if it fits."""
        if self._pending_count[group] >= self.limits.max_pending_per_peer:
            return self._oldest_of(group)
        if self._pending and (self._pending >= self.limits.max_pending or self._held >= self.limits.max_connections):
            # The peer holding the most; of equals, the one holding the oldest.
            heaviest = max(
                self._pending_by_peer,
                key=lambda peer: (self._pending_count[peer], -self._oldest_of(peer).order),
            )
            return self._oldest_of(heaviest)
        return None

    def _oldest_of(self, group: str) -> _Connection:
        """The oldest pending connection of the member of `group` holding the most (of equals, the oldest)."""
        members = self._pending_by_peer[group].values()
        held = max(members, key=lambda connections: (len(connections), -next(iter(connections)).order))
        return next(iter(held))

    def _evict(self, connection: _Connection) -> None:
        """Close a pending connection now, with a reset, and give its place back."""
        self._end_pending(connection)
        self._release(connection)
        connection.evicted = True
        self._evicted += 1
        self._evicted_total += 1
        _reset_on_close(connection.conn)
        # Cancelling alone may not close it: asyncio's TLS protocol cancelled before its connection_made (a
        # call_soon) has no transport to abort, and would carry on to its handshake deadline. Shut down, the
        # socket reads EOF at once whoever holds it.
        with contextlib.suppress(OSError):
            connection.conn.shutdown(socket.SHUT_RDWR)
        if not connection.started:  # cancelled before its first step, the task never runs: close it here
            connection.conn.close()
        if connection.task is not None:  # the task closes it: its selector registrations go first
            connection.task.cancel()

    async def _serve(self, connection: _Connection) -> None:
        connection.started = True
        loop = asyncio.get_running_loop()
        conn = connection.conn

        def on_first_request() -> None:
            self._end_pending(connection)

        reader = asyncio.StreamReader(limit=wire.MAX_HEAD_BYTES)
        protocol = asyncio.StreamReaderProtocol(reader)

        def protocol_factory() -> asyncio.StreamReaderProtocol:
            connection.owned = True  # called by asyncio right before it makes the transport over `conn`
            return protocol

        try:
            try:
                if self._tls is None:
                    transport, _ = await loop.connect_accepted_socket(protocol_factory, conn)
                else:
                    # No TLS state (a 256 KB buffer, OpenSSL's) before the client's first bytes: an idle
                    # connection costs a descriptor, and closing it to make room costs next to nothing.
                    began = loop.time()
                    if not await _readable(conn, self.limits.handshake_seconds):
                        log.debug("dood-proxy: a connection from %s to %s sent nothing", connection.member, self.name)
                        return
                    transport, _ = await loop.connect_accepted_socket(
                        protocol_factory,
                        conn,
                        ssl=self._tls,
                        ssl_handshake_timeout=max(0.1, self.limits.handshake_seconds - (loop.time() - began)),
                        ssl_shutdown_timeout=self.limits.tls_shutdown_seconds,
                    )
            except (OSError, EOFError) as exc:  # a failed or timed-out handshake, or the client gone
                log.debug(
                    "dood-proxy: a connection from %s to %s ended in its handshake: %r",
                    connection.member,
                    self.name,
                    exc,
                )
                return
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            await self._handler(reader, writer, on_first_request=on_first_request)
        except asyncio.CancelledError:
            pass  # evicted (_evict), or the proxy is stopping
        except Exception:  # one broken connection must not take the listener down
            log.exception("dood-proxy: unexpected error on a connection to %s", self.name)
        finally:
            if not connection.owned:
                conn.close()
            if connection.pending or connection.evicted:  # what it leaves is reclaimed
                self._end_pending(connection)
                self._reclaim_soon(tls_state=connection.owned and self._tls is not None)
            self._release(connection)

    def _end_pending(self, connection: _Connection) -> None:
        if not connection.pending:
            return
        connection.pending = False
        self._pending -= 1
        group = connection.group
        self._pending_count[group] -= 1
        if self._pending_count[group] <= 0:
            del self._pending_count[group]
        members = self._pending_by_peer[group]
        connections = members[connection.member]
        del connections[connection]
        if not connections:
            del members[connection.member]
            if not members:
                del self._pending_by_peer[group]

    def _release(self, connection: _Connection) -> None:
        if connection.slot:
            connection.slot = False
            self._held -= 1
            self._room_made.set()

    def _note(self, group: str) -> None:
        now = time.monotonic()
        if now - self._evictions_logged_at < _EVICTION_LOG_SECONDS:
            return
        log.warning(
            "dood-proxy: %s: closed %d connection(s) not yet past their first request to admit newer ones (the "
            "oldest of the peer holding the most; now %d of %d pending, %d of %d from %s, the last closed one's)",
            self.name,
            self._evicted,
            self._pending,
            self.limits.max_pending,
            self._pending_count[group],
            self.limits.max_pending_per_peer,
            group,
        )
        self._evicted = 0
        self._evictions_logged_at = now

    def _reclaim_soon(self, *, tls_state: bool) -> None:
        """`tls_state`: the connection had its TLS state made (what may wait for a full collection)."""
        self._unreclaimed += tls_state
        loop = asyncio.get_running_loop()
        if self._unreclaimed >= RECLAIM_AFTER:
            if self._reclaim is not None:
                self._reclaim.cancel()
            self._reclaim = loop.call_later(0, self._reclaim_now)
        elif self._reclaim is None:
            self._reclaim = loop.call_later(RECLAIM_SECONDS, self._reclaim_now)

    def _reclaim_now(self) -> None:
        self._reclaim = None
        self._unreclaimed = 0
        reclaim_memory()


async def _readable(conn: socket.socket, seconds: float) -> bool:
    """Whether `conn` has something to read (or an EOF, or an error) within `seconds`."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    fd = conn.fileno()

    def on_readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, on_readable)
    try:
        await asyncio.wait_for(ready, seconds)
    except asyncio.TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
    return True


def reclaim_memory() -> None:
    """Free what reference cycles hold (closed TLS connections), then give glibc's free heap pages back."""
    gc.collect()
    _malloc_trim()


_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024  # glibc's default; setting it stops glibc from raising it


def fix_mmap_threshold() -> None:
    """Allocations of `MMAP_THRESHOLD` or more (a TLS connection's 256 KB buffer) are mapped apart, and
    unmapped when freed, for the whole process (glibc only; `MALLOC_MMAP_THRESHOLD_` in the environment wins)."""
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is not None and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


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


def _reset_on_close(conn: socket.socket) -> None:
    """Its close will be a reset: nothing more is read or written, and no TIME_WAIT is left on our side."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
