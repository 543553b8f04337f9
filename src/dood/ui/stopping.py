"""Stops under way, for the DooD page: the notes stoppers leave in run directories
(`dood.lifecycle.teardown.note_stopping`).

Docker keeps a container "running" until its stop ends and records neither a "stopping" state nor who
asked, so the page reads the note: who asked, when, the grace period. The run directory is the step's as
well, so a note is read without following links, from a regular file of at most 4 KiB, its fields checked;
a note older than the container, or past its grace period by more than Docker's slack, is stale and ignored.
Display only: nothing is decided from a note.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from dood.lifecycle.docker_time import utc_datetime
from dood.lifecycle.teardown import SLACK_SECONDS, STOPPING_FILE
from dood.ui.rows import ALIVE, Stopping

MAX_NOTE_BYTES = 4096


def read_note(run_dir: str) -> dict[str, Any] | None:
    """The note in `run_dir`, or None (none, unreadable, a link, not a file, too big, malformed)."""
    try:
        fd = os.open(os.path.join(run_dir, STOPPING_FILE), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_NOTE_BYTES:
            return None
        note = json.loads(os.read(fd, MAX_NOTE_BYTES + 1)[:MAX_NOTE_BYTES])
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    if not isinstance(note, dict):
        return None
    who, asked_at, grace = note.get("who"), note.get("asked_at"), note.get("grace_seconds")
    if not isinstance(who, str) or not isinstance(asked_at, (int, float)) or not isinstance(grace, int):
        return None
    return {"who": who[:300], "asked_at": float(asked_at), "grace_seconds": max(0, grace)}


def stopping(runs_root: str | None, entries: Iterable[Mapping[str, Any]], now: datetime) -> dict[str, Stopping]:
    """The stops under way of these (`docker ps`) entries, by container id."""
    found: dict[str, Stopping] = {}
    if not runs_root:
        return found
    for entry in entries:
        if entry.get("State") not in ALIVE:
            continue
        name = str((entry.get("Names") or [""])[0]).lstrip("/")
        if not name or "/" in name or name.startswith("."):
            continue
        note = read_note(os.path.join(runs_root, name))
        if note is None:
            continue
        asked_at = datetime.fromtimestamp(note["asked_at"], timezone.utc)
        grace_ends = asked_at + timedelta(seconds=note["grace_seconds"])
        created = utc_datetime(entry.get("Created"))
        if (created and asked_at < created) or now > grace_ends + timedelta(seconds=SLACK_SECONDS):
            continue  # an earlier container's, or a stop that did not happen: not a stop under way
        found[str(entry.get("Id"))] = Stopping(note["who"], asked_at, grace_ends)
    return found
