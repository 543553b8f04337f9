"""HTML from the templates next to this module, autoescaped: container names, labels, log lines and results
are attacker-controlled text and only ever reach the page escaped."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from dood.ui import links

TEMPLATES = Path(__file__).parent / "templates"


def age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(seconds, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def size(value: int | None) -> str:
    if value is None:
        return "—"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} TiB"


#: Docker's timestamps: RFC 3339 with up to nanoseconds (`2026-12-06T21:03:00.123456789Z`, `+01:00`).
_RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:?\d{2})?", re.ASCII)


def moment(value: Any) -> datetime | None:
    """A datetime, epoch seconds, or Docker's RFC 3339 text of one (nanoseconds cut to microseconds); None for
    anything else and for Docker's "never" (`0001-01-01T00:00:00Z`)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, (int, float)) and not isinstance(value, bool):  # epoch seconds (a file's mtime)
        try:
            return datetime.fromtimestamp(value, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    found = _RFC3339.fullmatch(str(value or "").strip())
    if found is None or found[1].startswith("0001-"):
        return None
    day, clock, fraction, zone = found.groups()
    zone = "+00:00" if zone in (None, "Z") else zone
    try:
        return datetime.fromisoformat(f"{day}T{clock}.{(fraction or '0')[:6]:0<6}{zone}")
    except ValueError:
        return None


def when(value: Any) -> str:
    """`YYYY-MM-DD HH:MM:SS UTC`, as Airflow's UI shows times; "—" for none; other text as it is."""
    found = moment(value)
    if found is not None:
        return found.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    text = str(value or "")
    return "—" if not text or text.startswith("0001-") else text


def timestamp(value: Any) -> Markup:
    """`when` in a `<time>` whose title (a hover) is the full value: Docker's nanoseconds are still there."""
    shown = when(value)
    found = moment(value)
    if found is None:
        return escape(shown)
    full = str(value) if isinstance(value, str) else found.isoformat()
    return Markup('<time datetime="{0}" title="{0}">{1}</time>').format(full, shown)


_BREAKS = re.compile(r"(?<=[/:@])")


def breakable(text: Any) -> Markup:
    """An image reference that may wrap after `/`, `:` or `@`, never inside a name (`<wbr>` there)."""
    return Markup("<wbr>").join(escape(part) for part in _BREAKS.split(str(text or "")))


@cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(age=age, size=size, when=when, timestamp=timestamp, breakable=breakable)
    env.globals.update(links=links)
    return env


def page(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)
