"""Docker's times, read once: RFC 3339 with nanosecond digits, and Docker's zero time for "never".

The engine writes `StartedAt`, `FinishedAt`, `Created` (inspect) and `SystemTime` (info) this way; the
event stream and `docker ps` give epoch numbers. Every module that compares them reads them here.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$")


def epoch_ns(text: object) -> int:
    """Docker's RFC 3339 time as epoch nanoseconds; Docker's zero time (`0001-…`), or anything else, gives 0."""
    match = _RFC3339.match(text) if isinstance(text, str) else None
    if not match or match[1].startswith("0001-"):
        return 0
    offset = "+00:00" if match[3] in (None, "Z") else match[3]
    seconds = int(datetime.fromisoformat(match[1] + offset).timestamp())
    return seconds * 1_000_000_000 + int((match[2] or "").ljust(9, "0")[:9])


def epoch_seconds(value: object) -> float | None:
    """Epoch seconds of a Docker time: an RFC 3339 string or an epoch number (`docker ps`'s `Created`);
    None for Docker's zero time or anything unreadable."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    ns = epoch_ns(value)
    return ns / 1e9 if ns else None


def utc_datetime(value: object) -> datetime | None:
    """The same, as an aware datetime in UTC."""
    seconds = epoch_seconds(value)
    return datetime.fromtimestamp(seconds, timezone.utc) if seconds is not None else None
