"""A container that vanished before its outcome was read: said as exactly that, with its exit code when
the daemon still remembers it (its `die` event), never as a raw `404 No such container`."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from dood.exceptions import DoodError

if TYPE_CHECKING:
    from docker import APIClient

EVENTS_LOOKBACK_SECONDS = 24 * 3600  # the daemon keeps its last ~1000 events in memory; older ones are lost


def gone_message(container: str, exit_code: int | None) -> str:
    seen = f" (it exited with code {exit_code})" if exit_code is not None else " (its exit code is unknown)"
    return f"Container {container} was removed before its outcome could be read{seen}."


class ContainerGone(DoodError):
    """The container was removed (by someone else, or a kill) before this process read how it ended."""

    def __init__(self, container: str, exit_code: int | None = None) -> None:
        self.container = container
        self.exit_code = exit_code
        super().__init__(gone_message(container, exit_code))

    @classmethod
    def from_event(cls, container: str, event: dict[str, Any]) -> ContainerGone | None:
        """The error a trigger event reports (`status` error, `gone`), else None."""
        if event.get("status") != "error" or not event.get("gone"):
            return None
        exit_code = event.get("exit_code")
        return cls(container, int(exit_code) if exit_code is not None else None)


def last_exit_code(api: APIClient, container_id: str) -> int | None:
    """The exit code of the container's last `die` event, if the daemon's event buffer still holds it."""
    now = int(time.time())
    try:
        events = api.events(
            since=now - EVENTS_LOOKBACK_SECONDS,
            until=now + 1,
            filters={"type": "container", "container": container_id, "event": "die"},
            decode=True,
        )
        codes = [(event.get("Actor") or {}).get("Attributes", {}).get("exitCode") for event in events]
    except Exception:  # noqa: BLE001 - best effort: the report is "gone" either way
        return None
    known = [int(code) for code in codes if code is not None]
    return known[-1] if known else None
