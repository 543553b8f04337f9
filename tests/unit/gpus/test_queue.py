"""The queue of GPU waiters: tickets, leases, strictly first come first served."""

from __future__ import annotations

from dood.gpus.holdings import SERVED_LABEL, holders
from dood.gpus.queue import expired, served, ticket_key, tickets
from tests.unit.gpus.listings import NOW, holder_entry, ticket_entry

# --- the queue: first come, first served ---


def test_tickets_are_oldest_first_one_per_key_and_expired_ones_do_not_count():
    listed = [
        ticket_entry(30, "1"),
        ticket_entry(10, "2"),
        ticket_entry(20, "all", until=NOW - 1),
        ticket_entry(10, "2", until=NOW + 90),
    ]
    queue = tickets(listed, daemon_now=NOW)
    assert [(t.key, t.wants) for t in queue] == [(ticket_key(10), 2), (ticket_key(30), 1)]
    assert queue[0].until == NOW + 90  # of a renewal's two tickets, the renewed one
    assert expired(listed, daemon_now=NOW) == [f"t20-{NOW - 1}"]


def test_freed_gpus_go_to_the_oldest_waiters_and_a_big_request_stops_everyone_behind_it():
    devices = ("0", "1", "2", "3")
    holding = holders([holder_entry("h", "running", "0,1")], created_hold_seconds=0, now=NOW)
    queue = tickets([ticket_entry(10, "1"), ticket_entry(20, "all"), ticket_entry(30, "1")], daemon_now=NOW)
    assert served(devices, holding, queue, key=ticket_key(10), wanted=1) == ("2",)
    assert served(devices, holding, queue, key=ticket_key(20), wanted="all") is None
    assert served(devices, holding, queue, key=ticket_key(30), wanted=1) is None  # GPU 3 is free, not its turn
    assert served(devices, holding, queue, key=ticket_key(99), wanted=1) is None  # nor a newcomer's
    # once the oldest is served (its holder says so) its ticket no longer counts, even before it is removed
    taken = holders(
        [holder_entry("h", "running", "0,1"), holder_entry("s", "running", "2", **{SERVED_LABEL: ticket_key(10)})],
        created_hold_seconds=0,
        now=NOW,
    )
    assert served(devices, taken, queue, key=ticket_key(20), wanted="all") is None
    assert served(devices, [], queue, key=ticket_key(20), wanted="all") is None  # the oldest takes GPU 0 first
    assert served(devices, [], queue[1:], key=ticket_key(20), wanted="all") == devices
    assert served(devices, [], [], key=ticket_key(5), wanted=2) == ("0", "1")
