"""An endpoint's container events as a raw stream: die, oom and destroy, replayed from `since` on.

aiodocker's public ``events.subscribe()`` hides when the daemon has answered and swallows a broken stream;
a wait that must never miss an exit needs both, hence the lower-level ``_query``. The replay (`since=`)
covers the gap between Docker answering the subscription and registering it, and exits that happened
while a broken stream was being re-opened.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiodocker
import aiohttp

WATCHED_ACTIONS = ("die", "oom", "destroy")
REPLAY_MARGIN_SECONDS = 60  # `since=` reaches this far before the wait began: tolerates daemon clock skew

_STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=10)


@asynccontextmanager
async def ending_events(docker: aiodocker.Docker, since: int) -> AsyncIterator[aiohttp.StreamReader]:
    """The stream of every container's die/oom/destroy events, one JSON object per line (`parse_event`)."""
    filters = {"type": ["container"], "event": list(WATCHED_ACTIONS)}
    params = {"since": str(since), "filters": json.dumps(filters)}
    async with docker._query("events", params=params, timeout=_STREAM_TIMEOUT) as response:
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
