"""The Docker daemon's clock, estimated as ours plus an offset measured once per process and engine.

GPU tickets are keyed by the daemon's clock and event windows end in it: processes on other hosts sharing
the engine must agree on "now" without trusting their own clocks.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from dood.lifecycle.docker_time import epoch_seconds

if TYPE_CHECKING:
    from docker import APIClient

_OFFSETS: dict[str, float] = {}  # Docker URL -> daemon clock minus ours


def offset_of(system_time: object, before: float, after: float) -> float:
    """Daemon clock minus ours, from `GET /info`'s `SystemTime` read between `before` and `after`."""
    daemon = epoch_seconds(system_time)
    return 0.0 if daemon is None else daemon - (before + after) / 2


def clock_offset(api: APIClient, url: str) -> float:
    """The daemon's clock minus ours for the engine at `url` (one `GET /info` per process)."""
    if url not in _OFFSETS:
        before = time.time()
        system_time = api.info().get("SystemTime")
        _OFFSETS[url] = offset_of(system_time, before, time.time())
    return _OFFSETS[url]


def daemon_ns(api: APIClient, url: str) -> int:
    """Now on the daemon's clock, in nanoseconds."""
    return time.time_ns() + int(clock_offset(api, url) * 1e9)
