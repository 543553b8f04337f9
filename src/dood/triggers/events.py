"""An endpoint's container events as a raw stream: die, oom and destroy, replayed from `since` on.

aiodocker's public ``events.subscribe()`` hides when the daemon has answered and swallows a broken stream;
a wait that must never miss an exit needs both, hence the lower-level ``_query``. The replay (`since=`)
covers the gap between Docker answering the subscription and registering it, and exits that happened
while a broken stream was being re-opened.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiodocker
import aiohttp

WATCHED_ACTIONS = ("die", "oom", "destroy")
REPLAY_MARGIN_SECONDS = 60  # `since=` reaches this far before the wait began: tolerates daemon clock skew
ANSWER_SECONDS = 30.0  # a subscription the daemon has not answered by then is retried (a hung peer, not silence)

_STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=10)


@asynccontextmanager
async def ending_events(docker: aiodocker.Docker, since: int) -> AsyncIterator[aiohttp.StreamReader]:
    """The stream of every container's die/oom/destroy events, one JSON object per line (`parse_event`).
    Once answered it may stay silent for hours; an answer that does not come raises TimeoutError."""
    filters = {"type": ["container"], "event": list(WATCHED_ACTIONS)}
    params = {"since": str(since), "filters": json.dumps(filters)}
    async with AsyncExitStack() as stack:
        query = docker._query("events", params=params, timeout=_STREAM_TIMEOUT)
        response = await asyncio.wait_for(stack.enter_async_context(query), ANSWER_SECONDS)
        try:
            yield response.content
        finally:
            response.close()  # release() would wait for the end of an endless stream


def parse_event(line: bytes) -> dict[str, Any] | None:
    """One line of the stream as an event; None for anything else (noise never ends a wait)."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def event_names(event: dict[str, Any]) -> tuple[str, str]:
    """The container's full id and its name (without Docker's leading slash), as a wait may name it."""
    actor = event.get("Actor") or {}
    name = str((actor.get("Attributes") or {}).get("name") or "")
    return str(actor.get("ID") or event.get("id") or ""), name.lstrip("/")


def event_action(event: dict[str, Any]) -> str:
    """What happened ("die", "oom", ...): `Action`, or the older `status` some daemons still send alone."""
    return str(event.get("Action") or event.get("status") or "")
