"""One event stream and one session per Docker endpoint, shared by every container wait of a process.

Why: a triggerer carries hundreds of waits, most on the same one or two endpoints. With a stream each, a wait
cost its connection: over TLS asyncio keeps a 256 KiB read buffer per stream (0.29 MiB per wait measured),
and 1,000 waits starting together opened 1,000 TLS connections at once (47-160 s to subscribe them all).
Shared, a wait costs a queue, and the session's connector bounds the connections opened at a time.

A session made before a certificate was renewed on disk is replaced at the next wait that starts (its stream
breaks, every wait inspects again and reconnects with the new files): a triggerer that runs for months needs
no restart when its client certificate is renewed, as when every wait made its own session.

The guarantees of a stream of one's own are kept: a wait's feed starts with the events of its container
that the stream has carried in the last REPLAY_MARGIN_SECONDS (as `since=` replayed them to a new stream),
and every feed ends when the stream breaks, so each wait inspects again after the reconnect, which the
first wait to come back makes for all (`since=` from before the break).
"""

from __future__ import annotations

import asyncio
import logging
import string
import time
import weakref
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager, suppress
from typing import Any

import aiodocker

from dood.triggers.events import REPLAY_MARGIN_SECONDS, ending_events, event_action, event_names, parse_event

log = logging.getLogger(__name__)
_END = object()  # put in a feed when the stream it came from broke
_HEX = frozenset(string.hexdigits.lower())
_PRUNE_EVERY_SECONDS = 5.0

EndpointKey = Hashable  # the endpoint (`dood.engine.target.DockerTarget`): waits with equal keys share a session


class Feed:
    """One wait's share of the stream: its container's events in order, until the stream breaks."""

    def __init__(self, container: str) -> None:
        self.container = container.lstrip("/")
        self._queue: asyncio.Queue[Any] = asyncio.Queue()

    def put(self, event: dict[str, Any]) -> None:
        self._queue.put_nowait(event)

    def end(self) -> None:
        self._queue.put_nowait(_END)

    def matches(self, container_id: str, name: str) -> bool:
        """Whether an event of this container is for this wait, named by id, short id or name."""
        key = self.container
        return key in (container_id, name) or (_is_short_id(key) and container_id.startswith(key))

    def __aiter__(self) -> Feed:
        return self

    async def __anext__(self) -> dict[str, Any]:
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # stays ended for a second reader
            raise StopAsyncIteration
        return item


class EventHub:
    """The shared stream and session of one endpoint in one event loop (`shared_hub` hands them out)."""

    def __init__(
        self, make_session: Callable[[], aiodocker.Docker], credentials: Callable[[], object] = lambda: None
    ) -> None:
        self._make_session = make_session
        self._credentials = credentials  # what the session was made from (TLS files): a change makes a new one
        self._made_from = credentials()
        self.docker = make_session()  # for the waits' inspects too: its connector bounds the connections
        self._feeds: set[Feed] = set()
        self._recent: list[tuple[float, dict[str, Any]]] = []  # (arrival, event): a new feed's replay
        self._seen: set[tuple[str, str, int]] = set()  # a reconnect's replay repeats events already carried
        self._pruned = time.monotonic()
        self._reader: asyncio.Task[None] | None = None
        self._connecting: asyncio.Future[None] | None = None
        self._broke_at: float | None = None
        self.users = 0

    @asynccontextmanager
    async def feed(self, container: str) -> AsyncIterator[Feed]:
        """A feed of this container's events on an open stream; raises what connecting raised."""
        await self._renew_session()
        await self._connected()
        feed = Feed(container)
        for _, event in self._recent:  # no await from here to the add: nothing is missed or doubled
            if feed.matches(*event_names(event)):
                feed.put(event)
        self._feeds.add(feed)
        if self._reader is None or self._reader.done():
            feed.end()  # broke in the meantime
        try:
            yield feed
        finally:
            self._feeds.discard(feed)

    async def close(self) -> None:
        await self._stop_reading()
        await self.docker.close()

    async def _stop_reading(self) -> None:
        """End the stream (its feeds end with it) and wait until its reader is gone."""
        if self._reader is not None:
            self._reader.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await self._reader

    async def _renew_session(self) -> None:
        """A new session when the endpoint's credentials changed; the old one is closed, which breaks its
        stream: every wait then inspects again and the next to ask reconnects with the new credentials."""
        if self._connecting is not None and not self._connecting.done():
            return  # being opened: the waits that asked are waiting for it; looked at again by the next wait
        try:
            now = self._credentials()
        except OSError:
            return  # a file missing for a moment, as while it is replaced: the current session goes on
        if now == self._made_from:
            return
        log.info("The endpoint's certificate files changed: a new session, and the event stream re-opened")
        self._made_from = now
        old, self.docker = self.docker, self._make_session()
        await self._stop_reading()
        await old.close()

    async def _connected(self) -> None:
        """Open the stream unless it is open, once for every wait asking at the same time; while it is being
        opened, wait for the daemon's answer (a wait must not inspect before its events are subscribed)."""
        connecting = self._connecting
        if connecting is None or self._reader is None or self._reader.done():
            connecting = self._connecting = asyncio.get_running_loop().create_future()
            self._reader = asyncio.create_task(self._read(connecting))
        await asyncio.shield(connecting)

    async def _read(self, connected: asyncio.Future[None]) -> None:
        since = int((self._broke_at or time.time()) - REPLAY_MARGIN_SECONDS)
        opened = False
        try:
            async with ending_events(self.docker, since) as stream:
                connected.set_result(None)
                opened = True
                async for line in stream:
                    event = parse_event(line)
                    if event is not None:
                        self._carry(event)
        except asyncio.CancelledError:
            connected.cancel()  # closing: nobody waits any more
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the waiters, who say what failed
            if not connected.done():
                connected.set_exception(exc)
                connected.exception()  # marked as read: every wait that asked raises its own copy
        finally:
            if opened:
                self._broke_at = time.time()
            for feed in self._feeds:
                feed.end()

    def _carry(self, event: dict[str, Any]) -> None:
        container_id, name = event_names(event)
        key = _event_key(event)
        if key in self._seen:
            return
        self._seen.add(key)
        self._recent.append((time.monotonic(), event))
        for feed in self._feeds:
            if feed.matches(container_id, name):
                feed.put(event)
        self._prune()

    def _prune(self) -> None:
        now = time.monotonic()
        if now - self._pruned < _PRUNE_EVERY_SECONDS:
            return
        self._pruned = now
        self._recent = [(at, event) for at, event in self._recent if now - at <= REPLAY_MARGIN_SECONDS]
        self._seen = {_event_key(event) for _, event in self._recent}


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[EndpointKey, EventHub]] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def shared_hub(
    endpoint: EndpointKey,
    make_session: Callable[[], aiodocker.Docker],
    credentials: Callable[[], object] = lambda: None,
) -> AsyncIterator[EventHub]:
    """The hub of this endpoint in the running loop, made on first use and closed with its last user."""
    hubs = _hubs.setdefault(asyncio.get_running_loop(), {})
    hub = hubs.get(endpoint)
    if hub is None:
        hub = hubs[endpoint] = EventHub(make_session, credentials)
    hub.users += 1
    try:
        yield hub
    finally:
        hub.users -= 1
        if hub.users == 0 and hubs.get(endpoint) is hub:
            del hubs[endpoint]
            await hub.close()


def _event_key(event: dict[str, Any]) -> tuple[str, str, int]:
    """What makes two deliveries the same event (a reconnect's replay repeats what was carried)."""
    return event_names(event)[0], event_action(event), int(event.get("timeNano") or 0)


def _is_short_id(key: str) -> bool:
    return 0 < len(key) < 64 and set(key) <= _HEX
