"""Wake-up decisions from the engine's events alone: one GPU freed wakes the head of the queue."""

from __future__ import annotations

from dood.gpus.holdings import GPUS_LABEL, SERVED_LABEL, holders
from dood.gpus.queue import TICKET_LABEL, TICKET_WANTS_LABEL, served, ticket_key, tickets
from dood.gpus.wakeup import Wakeup, still_holding
from tests.unit.gpus.listings import NOW, holder_entry, ticket_entry

# --- the wake-up estimate ---


def _event(action: str, cid: str, **attributes: str) -> dict:
    return {"Type": "container", "Action": action, "Actor": {"ID": cid, "Attributes": attributes}}


def test_a_waiter_looks_again_only_when_the_events_say_it_may_be_its_turn():
    devices = ("0", "1", "2", "3")
    holding = holders(
        [holder_entry("a", "running", "0"), holder_entry("b", "running", "1,2,3")], created_hold_seconds=0, now=NOW
    )
    queue = tickets([ticket_entry(10, "1"), ticket_entry(20, "1"), ticket_entry(30, "2")], daemon_now=NOW)
    second = Wakeup(devices, ticket_key(20), 1)
    second.looked(holding, queue)
    head = Wakeup(devices, ticket_key(10), 1)
    head.looked(holding, queue)
    freed = _event("die", "a" * 8, **{GPUS_LABEL: "0"})
    assert head.saw(freed) and not second.saw(freed)  # one GPU freed: only the head looks
    assert not second.saw(_event("destroy", "a" * 8, **{GPUS_LABEL: "0"}))  # the same release, counted once
    claimed = _event("create", "s", **{GPUS_LABEL: "0", SERVED_LABEL: ticket_key(10)})
    assert not second.saw(claimed)  # the head took it
    assert not second.saw(_event("destroy", "t10", **{TICKET_LABEL: ticket_key(10), TICKET_WANTS_LABEL: "1"}))
    assert not second.saw(_event("destroy", "t30", **{TICKET_LABEL: ticket_key(30), TICKET_WANTS_LABEL: "2"}))
    assert not second.saw(_event("die", "x", image="busybox"))  # not a GPU holder
    assert second.saw(_event("die", "b" * 8, **{GPUS_LABEL: "1,2,3"}))


def test_a_create_event_of_a_holder_the_look_already_saw_is_not_counted_twice():
    """The event stream opens before the look, so the create of a holder the look listed may come after it."""
    devices = ("0", "1")
    holding = holders(
        [holder_entry("a", "running", "0"), holder_entry("b", "running", "1")], created_hold_seconds=0, now=NOW
    )
    head = Wakeup(devices, ticket_key(10), 1)
    head.looked(holding, tickets([ticket_entry(10, "1")], daemon_now=NOW))
    assert not head.saw(_event("create", "a" * 8, **{GPUS_LABEL: "0"}))  # already counted as held
    assert head.saw(_event("die", "a" * 8, **{GPUS_LABEL: "0"}))


def test_a_holder_seen_dying_no_longer_holds_even_while_the_list_still_shows_it_running():
    """Right after a die event the engine's list can still show the container running: a waiter that saw the
    event leaves it out of its look, or it would go back to sleep with the GPUs free."""
    devices = ("0", "1")
    listed = [holder_entry("a", "running", "0,1")]
    ended: set[str] = set()
    waiter = Wakeup(devices, ticket_key(10), "all", ended=ended)
    waiter.looked(holders(listed, created_hold_seconds=0, now=NOW), [])
    assert waiter.saw(_event("die", "a" * 8, **{GPUS_LABEL: "0,1"}))
    assert ended == {"a" * 8}
    looked_again = still_holding(holders(listed, created_hold_seconds=0, now=NOW), ended)
    assert looked_again == [] and served(devices, looked_again, [], key=ticket_key(10), wanted="all") == devices
