"""When a GPU waiter should look again, from the engine's container events alone (pure, no API call)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dood.gpus.holdings import GPUS_LABEL, SERVED_LABEL, held_by, label_ids
from dood.gpus.queue import TICKET_LABEL, TICKET_WANTS_LABEL, wants_of

if TYPE_CHECKING:
    from dood.gpus.holdings import Asked, Holder
    from dood.gpus.queue import Ticket


class Wakeup:
    """When a waiter should look again, from the engine's container events alone (no API call).

    After a look it knows how many GPUs were free and how many the older waiters and itself need. Each
    event then moves that estimate: a holder's die/destroy frees its GPUs (once per container), a holder's
    create takes them, an older ticket's destroy lowers the need. Only when the estimate says it may be
    its turn does it look again (two list calls). With 50 waiters and one GPU freed, one waiter looks, not
    50. A release no event shows (a created holder outliving `created_hold_seconds`, a ticket's lease
    running out) waits for the bounded re-check."""

    def __init__(self, devices: Sequence[str], key: str, wanted: Asked, *, ended: set[str] | None = None) -> None:
        self.devices = tuple(devices)
        self.key = key
        self.mine = len(self.devices) if wanted == "all" else int(wanted)
        # ids of holders seen dying: the engine's list can still show one running right after its die
        # event, so a look must leave them out (`still_holding`) or it would miss the release
        self.ended = ended if ended is not None else set()
        self.looked(holding=[], queue=[])

    def looked(self, holding: Iterable[Holder], queue: Iterable[Ticket]) -> None:
        holding = list(holding)
        taken = set(held_by(holding)) & set(self.devices)
        done = {h.labels.get(SERVED_LABEL) for h in holding} - {None}
        self.free = len(self.devices) - len(taken)
        self.need = self.mine + sum(
            len(self.devices) if t.wants == "all" else int(t.wants)
            for t in queue
            if t.key < self.key and t.key not in done
        )
        self._released: set[str] = set()
        # created before the look (the stream opens first, so their create events may still come): counted
        self._taken: set[str] = {h.container_id for h in holding}
        self._left: set[str] = set()

    def saw(self, event: Mapping[str, Any]) -> bool:
        """Take one event of `GET /events` into account; True when it is worth looking again."""
        if event.get("Type") != "container":
            return False
        action = event.get("Action") or event.get("status") or ""
        actor = event.get("Actor") or {}
        attributes = actor.get("Attributes") or {}
        container = actor.get("ID") or event.get("id") or ""
        gpus = [gpu for gpu in label_ids(attributes.get(GPUS_LABEL)) if gpu in self.devices]
        key = attributes.get(TICKET_LABEL)
        if gpus:
            if action in ("die", "destroy") and container not in self._released:
                self._released.add(container)
                self.ended.add(container)
                self.free += len(gpus)
            elif action == "create" and container not in self._taken:
                self._taken.add(container)
                self.free -= len(gpus)
                served_key = attributes.get(SERVED_LABEL)
                if served_key and served_key < self.key and served_key not in self._left:
                    self._left.add(served_key)  # its waiter is served: its need is now a holding
                    self.need -= _count_of(attributes.get(TICKET_WANTS_LABEL), len(gpus), self.devices)
        elif key and key < self.key and action == "destroy" and key not in self._left:
            # an older waiter left (served, timed out, killed) or renewed; look again only if it could matter
            self._left.add(key)
            self.need -= _count_of(attributes.get(TICKET_WANTS_LABEL), 0, self.devices)
        else:
            return False
        return self.free >= self.need


def still_holding(holding: Iterable[Holder], ended: set[str]) -> list[Holder]:
    """The holders, less those whose die or destroy event was seen (the list may lag behind the events)."""
    return [holder for holder in holding if holder.container_id not in ended]


def _count_of(wants: str | None, default: int, devices: Sequence[str]) -> int:
    value = wants_of(wants)
    if value is None:
        return default
    return len(devices) if value == "all" else value
