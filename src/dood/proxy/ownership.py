"""Whether a container is ours: it carries `dood.managed=true` and our `dood.stack`. Decided by the daemon,
remembered by id.

A name or id prefix is resolved by inspecting it upstream, and the call is then sent with the full id,
so a name that is re-pointed between the check and the call cannot redirect it. A full id, once seen to
be ours, stays ours (labels are immutable and ids are never reused), so it is remembered (bounded).

Optionally, containers carrying one of the `inspectable` labels (the Airflow containers themselves) may be
inspected, read-only, so that dood's mount discovery works behind the proxy; nothing else is allowed on them.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

from dood.naming import DEFAULT_STACK, HOST_LABEL, MANAGED_LABEL, STACK_LABEL
from dood.proxy.allow_list import Refused
from dood.proxy.daemon import Daemon, daemon_message

FULL_ID = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Owned:
    """A container of ours: its full id, and the inspect body when one was just fetched."""

    container_id: str
    inspect: bytes | None = None


class Ownership:
    def __init__(
        self,
        daemon: Daemon,
        *,
        inspectable: Iterable[str] = (),
        capacity: int = 4096,
        stack: str = DEFAULT_STACK,
        host: str | None = None,
    ) -> None:
        self.daemon = daemon
        self.stack = stack
        self.host = host  # set: only containers labelled dood.host=<host> too (several Docker hosts)
        self.inspectable = tuple(inspectable)
        self.capacity = capacity
        self._known: OrderedDict[str, None] = OrderedDict()

    def remember(self, container_id: str) -> None:
        if FULL_ID.match(container_id):
            self._known[container_id] = None
            self._known.move_to_end(container_id)
            while len(self._known) > self.capacity:
                self._known.popitem(last=False)

    def forget(self, container_id: str) -> None:
        self._known.pop(container_id, None)

    async def resolve(self, container: str, prefix: str = "", *, read_only: bool = False) -> Owned:
        """Ours -> `Owned`; missing -> the daemon's 404; anyone else's -> 403 (unless inspectable, read-only)."""
        if container in self._known:
            self._known.move_to_end(container)
            return Owned(container)
        status, body = await self.daemon.call("GET", f"{prefix}/containers/{quote(container, safe='')}/json")
        if status == 404:
            raise Refused(404, daemon_message(body), verbatim=True)
        if status != 200:
            raise Refused(502, f"inspecting {container!r} failed ({status}): {daemon_message(body)}")
        try:
            info = json.loads(body)
            labels = (info.get("Config") or {}).get("Labels") or {}
            container_id = info["Id"]
        except (ValueError, KeyError, AttributeError):
            raise Refused(502, f"the daemon's inspect of {container!r} is not readable") from None
        foreign_host = labels.get(HOST_LABEL) != self.host  # without --host: only containers of no host
        if labels.get(MANAGED_LABEL) != "true" or labels.get(STACK_LABEL) != self.stack or foreign_host:
            if read_only and any(_carries(labels, label) for label in self.inspectable):
                return Owned(container_id, body)
            if labels.get(MANAGED_LABEL) != "true":
                whose = f"is not managed by dood (it lacks the label {MANAGED_LABEL}=true)"
            elif labels.get(STACK_LABEL) != self.stack:
                whose = f"belongs to another dood stack, not {self.stack!r}"  # which one is not ours to say
            else:
                whose = (
                    f"was launched for another Docker host, not {self.host!r}"
                    if self.host is not None
                    else "was launched for a named Docker host (this proxy runs without --host)"
                )
            raise Refused(403, f"container {container!r} {whose}; dood-proxy only touches its own stack's containers")
        self.remember(container_id)
        return Owned(container_id, body)


def _carries(labels: Mapping[str, str], label: str) -> bool:
    """`key=value`: that label with that value; `key`: that label with any value."""
    key, equals, value = label.partition("=")
    return key in labels and (not equals or labels[key] == value)
