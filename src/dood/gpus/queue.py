"""The queue of GPU waiters, first come, first served: tickets in the engine and whose turn it is (pure).

A waiter's place is a *ticket*: a created, never started container labelled with the daemon's clock when
the task first asked. Freed GPUs go to the oldest tickets first, strictly (`served`). Placing, renewing and
removing tickets in the engine: `dood.gpu_ticket`.

Tickets are not trusted blindly: one no waiter of this inventory could have placed (a malformed key, more
GPUs than the host has, a lease reaching further than any renewal would) is left out (`tickets`), and one
whose turn came but whose waiter never claims (a ticket placed by someone who will not claim) stops the
queue for at most `gpus.ticket_lease_seconds` in each waiter's eyes, then is passed over (`Stalls`): a
real waiter claims within seconds of its turn, and a deferred one's ticket (not renewed after its trigger
fired) expires within a lease.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dood.gpus.holdings import SERVED_LABEL, choose, held_by

if TYPE_CHECKING:
    from dood.gpus.holdings import Asked, Holder

#: On a ticket (a created, never started placeholder container): the waiter's place, the daemon's clock in
#: nanoseconds when it first asked, zero-padded so that names and strings sort as numbers.
TICKET_LABEL = "dood.gpu_ticket"
#: On a ticket: what its waiter asks for ('1', '2', 'all').
TICKET_WANTS_LABEL = "dood.gpu_wants"
#: On a ticket: the daemon's clock (epoch seconds) after which nobody renewed it: its waiter is gone.
TICKET_UNTIL_LABEL = "dood.gpu_ticket_until"
#: On a ticket: the task instance waiting (stack/dag/task/run/map), so a later try takes its place again.
TICKET_FOR_LABEL = "dood.gpu_ticket_for"
#: A ticket's key: 20 digits (`ticket_key`).
KEY_PATTERN = re.compile(r"[0-9]{20}")
#: In dood-proxy's refusal of a ticket key it cannot vouch for (neither fresh nor a live ticket's of the
#: stack): the waiter's place is gone, it takes a fresh key (`dood.gpus.ticket.QueuePlace.place`).
KEY_NOT_CURRENT = "ticket key is not current"
#: The name a ticket is created with: `dood-gpu-ticket-<key>-<6 hex digits>`.
TICKET_NAME = re.compile(r"dood-gpu-ticket-([0-9]{20})-[0-9a-f]{6}")


def ticket_key(daemon_ns: int) -> str:
    return f"{daemon_ns:020d}"


@dataclass(frozen=True)
class Ticket:
    """One waiter's place in the queue of a Docker host's GPUs."""

    container_id: str
    key: str
    wants: Asked
    until: float
    waiter: str


def wants_of(value: str | None) -> Asked | None:
    if value == "all":
        return "all"
    try:
        number = int(value or "")
    except ValueError:
        return None
    return number if number > 0 else None


def tickets(
    containers: Iterable[Mapping[str, Any]],
    *,
    daemon_now: float,
    devices: Sequence[str] = (),
    lease_seconds: float | None = None,
) -> list[Ticket]:
    """The live tickets (entries of `GET /containers/json?all=1`), oldest first; one per key (a renewal
    briefly leaves two), expired ones (`until` passed: nobody renews them) left out. So are tickets no
    waiter could have placed: a malformed key, more GPUs than `devices` (when given), an `until` further
    than twice `lease_seconds` ahead (when given; a renewal reaches one lease ahead)."""
    by_key: dict[str, Ticket] = {}
    for container in containers:
        labels = container.get("Labels") or {}
        key, wants = labels.get(TICKET_LABEL), wants_of(labels.get(TICKET_WANTS_LABEL))
        try:
            until = float(labels.get(TICKET_UNTIL_LABEL) or 0)
        except ValueError:
            until = 0.0
        if not key or not KEY_PATTERN.fullmatch(key) or wants is None or until <= daemon_now:
            continue
        if devices and wants != "all" and wants > len(devices):
            continue  # can never be served here: it would stop everyone behind it forever
        if lease_seconds is not None and until > daemon_now + 2 * lease_seconds:
            continue
        ticket = Ticket(container["Id"], key, wants, until, labels.get(TICKET_FOR_LABEL, ""))
        if key not in by_key or by_key[key].until < until:
            by_key[key] = ticket
    return sorted(by_key.values(), key=lambda t: t.key)


def expired(containers: Iterable[Mapping[str, Any]], *, daemon_now: float) -> list[str]:
    """Ids of tickets nobody renewed in time (their waiter died): anyone may remove them."""
    found = []
    for container in containers:
        labels = container.get("Labels") or {}
        try:
            until = float(labels.get(TICKET_UNTIL_LABEL) or 0)
        except ValueError:
            until = 0.0
        if labels.get(TICKET_LABEL) and until <= daemon_now:
            found.append(container["Id"])
    return found


def in_turn(devices: Sequence[str], holding: Iterable[Holder], queue: Iterable[Ticket]) -> list[str]:
    """Keys of the tickets whose turn it is now (their GPUs are free after every older waiter's), in order."""
    holding = list(holding)
    taken = set(held_by(holding))
    done = {h.labels.get(SERVED_LABEL) for h in holding} - {None}
    found = []
    for ticket in queue:
        if ticket.key in done:
            continue
        ids = choose(devices, taken, ticket.wants)
        if ids is None:
            break
        taken.update(ids)
        found.append(ticket.key)
    return found


class Stalls:
    """Tickets whose turn came but that nobody claims with: passed over once in turn for `grace` seconds.

    A waiter claims within seconds of its turn; a deferred waiter's ticket is no longer renewed once its
    trigger fired, so it expires within a lease. A ticket still there and in turn after that was placed by
    someone who will not claim (on the raw socket, or a crashed claimer's renewal thread): without this it
    would keep every younger waiter waiting for as long as it is renewed. Per process (each waiter's own
    clock); a ticket that leaves its turn starts over."""

    def __init__(self, grace: float, *, clock: Any = time.monotonic) -> None:
        self.grace = grace
        self.clock = clock
        self._since: dict[str, float] = {}

    def passed_over(
        self, devices: Sequence[str], holding: Iterable[Holder], queue: Sequence[Ticket], *, own: str | None = None
    ) -> frozenset[str]:
        """Keys to pass over: in turn (ahead of everyone after them) for `grace` seconds or more."""
        now = self.clock()
        skipped = frozenset(k for k, since in self._since.items() if now - since >= self.grace)
        turns = in_turn(devices, holding, [t for t in queue if t.key not in skipped])
        current = set(turns) | {k for k in skipped if any(t.key == k for t in queue)}
        self._since = {k: self._since.get(k, now) for k in current if k != own}
        return frozenset(k for k, since in self._since.items() if now - since >= self.grace)

    def queue(
        self, devices: Sequence[str], holding: Iterable[Holder], queue: Sequence[Ticket], *, own: str | None = None
    ) -> list[Ticket]:
        """`queue` without the tickets passed over."""
        skipped = self.passed_over(devices, list(holding), queue, own=own)
        return [t for t in queue if t.key not in skipped]


def served(
    devices: Sequence[str], holding: Iterable[Holder], queue: Iterable[Ticket], *, key: str, wanted: Asked
) -> tuple[str, ...] | None:
    """The GPUs the waiter with ticket `key` may claim now, strictly first come, first served: the older
    waiters take theirs first, in order; the first one that does not fit stops everyone behind it (so a
    request for all GPUs is not starved by a stream of small ones). None: not this waiter's turn yet.

    `key` need not be in the queue: a newcomer asks with a key later than everyone's."""
    holding = list(holding)
    taken = set(held_by(holding))
    done = {h.labels.get(SERVED_LABEL) for h in holding} - {None}  # claimed, ticket not yet removed
    for ticket in queue:
        if ticket.key >= key:
            break
        if ticket.key in done:
            continue
        ids = choose(devices, taken, ticket.wants)
        if ids is None:
            return None
        taken.update(ids)
    return choose(devices, taken, wanted)


def ahead_of(queue: Iterable[Ticket], key: str) -> int:
    """How many waiters are before `key`."""
    return sum(1 for ticket in queue if ticket.key < key)


def ticket_body(
    *, image: str, user: str | None, key: str, wanted: Asked, until: float, waiter: str, labels: Mapping[str, str]
) -> dict[str, Any]:
    """The create body of a ticket: never started (no process, a few KiB), the step's own image and user so
    it passes dood-proxy's policy like the step would."""
    return {
        "Image": image,
        "Cmd": ["true"],
        "User": user or "65534:65534",
        "Labels": {
            **labels,
            TICKET_LABEL: key,
            TICKET_WANTS_LABEL: str(wanted),
            TICKET_UNTIL_LABEL: f"{until:.3f}",
            TICKET_FOR_LABEL: waiter,
        },
        "HostConfig": {"SecurityOpt": ["no-new-privileges"]},
    }
