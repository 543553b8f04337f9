"""The GPU inventory model, holdings read from the engine's list, the choice of GPUs, the proxy's referee."""

from __future__ import annotations

import pytest
from docker.types import DeviceRequest

from dood.config import parse_config
from dood.exceptions import DoodConfigError
from dood.gpus import (
    COLLISION,
    GPUS_LABEL,
    SERVED_LABEL,
    TICKET_FOR_LABEL,
    TICKET_LABEL,
    TICKET_UNTIL_LABEL,
    TICKET_WANTS_LABEL,
    GpuInventory,
    Wakeup,
    asked,
    choose,
    claimed_body,
    expired,
    held_by,
    holders,
    named,
    never_fits,
    referee,
    refused_as_held,
    served,
    still_holding,
    ticket_key,
    tickets,
)
from dood.gpus_cli import render, table
from dood.resources import Resources

NOW = 1_800_000_000.0


def _listed(cid: str, state: str, gpus: str, created: float = NOW - 600, **labels: str) -> dict:
    return {
        "Id": cid * 8,
        "Names": [f"/{cid}"],
        "State": state,
        "Created": int(created),
        "Labels": {GPUS_LABEL: gpus, **labels},
    }


def _body(**resources) -> dict:
    request = Resources(**resources).host_config_kwargs()["device_requests"][0]
    return {"Image": "x", "Labels": {"a": "b"}, "HostConfig": {"DeviceRequests": [dict(request)]}}


# --- inventory ---


def test_the_inventory_takes_indexes_and_uuids_as_strings():
    assert GpuInventory(devices=[0, 1, "GPU-8f6c"]).devices == ("0", "1", "GPU-8f6c")
    assert parse_config({"gpus": {"devices": [0, 1]}}).gpus.devices == ("0", "1")
    assert parse_config({}).gpus.devices == ()


@pytest.mark.parametrize(
    "devices, message",
    [
        ("0,1", "must be a list of GPU ids"),
        (["0", "0"], "listed twice"),
        (["0,1"], "one GPU per entry"),
        (["all"], "one GPU per entry"),
        ([True], "a GPU id is an index or a UUID"),
    ],
)
def test_a_bad_inventory_names_the_field(devices, message):
    with pytest.raises(DoodConfigError, match=r"gpus\.devices") as caught:
        parse_config({"gpus": {"devices": devices}})
    assert message in str(caught.value)


# --- what the engine says is held ---


def test_running_paused_and_freshly_created_containers_hold_their_gpus():
    listed = [
        _listed("run", "running", "0"),
        _listed("pause", "paused", "1,2"),
        _listed("new", "created", "3", created=NOW - 5),
        _listed("old", "created", "4", created=NOW - 600),  # its creator died before starting it
        _listed("done", "exited", "5"),
        _listed("dead", "dead", "6"),
        _listed("gone", "removing", "7"),
    ]
    found = holders(listed, created_hold_seconds=120, now=NOW)
    assert sorted(held_by(found)) == ["0", "1", "2", "3"]
    assert held_by(found)["2"].name == "pause"


def test_a_holder_describes_its_task():
    labels = {"dood.dag_id": "d", "dood.task_id": "train", "dood.run_id": "r1", "dood.try_number": "2"}
    (holder,) = holders([_listed("c", "running", "1", **labels)], created_hold_seconds=0, now=NOW)
    assert holder.describe() == "d/train/r1 try 2 (c, running)"
    (mapped,) = holders([_listed("m", "running", "1", **labels, **{"dood.map_index": "3"})], created_hold_seconds=0)
    assert mapped.describe().startswith("d/train/r1[3] try 2")


# --- the choice ---


def test_choose_takes_the_first_free_gpus_and_all_only_when_all_are_free():
    devices = ("0", "1", "2", "3")
    assert choose(devices, {"0", "2"}, 2) == ("1", "3")
    assert choose(devices, {"0", "2"}, 3) is None
    assert choose(devices, set(), "all") == devices
    assert choose(devices, {"9"}, "all") == devices  # a GPU outside the inventory is not ours to wait for
    assert choose(devices, {"1"}, "all") is None


def test_what_a_body_asks_for():
    assert asked(_body(gpus=2)) == 2
    assert asked(_body(gpus="all")) == "all"
    assert asked({"HostConfig": {}}) is None
    ids = {"HostConfig": {"DeviceRequests": [dict(DeviceRequest(device_ids=["1", "2"], capabilities=[["gpu"]]))]}}
    assert asked(ids) is None and named(ids) == ("1", "2")


def test_a_claimed_body_names_the_gpus_and_carries_the_label():
    body = _body(gpus=2, memory="1g")
    claimed = claimed_body(body, ("1", "3"))
    (request,) = claimed["HostConfig"]["DeviceRequests"]
    assert request["DeviceIDs"] == ["1", "3"] and request["Count"] == 0
    assert request["Capabilities"] == [["gpu"]]
    assert claimed["Labels"] == {"a": "b", GPUS_LABEL: "1,3"}
    assert asked(claimed) is None and named(claimed) == ("1", "3")
    assert body["HostConfig"]["DeviceRequests"][0]["Count"] == 2  # the original is untouched


def test_requests_that_can_never_be_granted_say_why():
    assert "lists no GPUs" in never_fits((), 1)
    assert never_fits(("0", "1"), 3) == "asks for 3 GPUs; the Docker host has 2 (gpus.devices: ['0', '1'])"
    assert never_fits(("0", "1"), "all") is None and never_fits(("0", "1"), 2) is None


# --- the proxy's referee ---


def test_the_referee_refuses_counts_held_gpus_and_repeats():
    holding = holders(
        [_listed("c", "running", "1", **{"dood.dag_id": "d", "dood.task_id": "t", "dood.run_id": "r"})],
        created_hold_seconds=0,
    )
    assert "Count without DeviceIDs" in referee(_body(gpus=1), holding)[0]
    problems = referee(claimed_body(_body(gpus=2), ("0", "1")), holding)
    assert problems == ["GPU 1 is held by d/t/r try ? (c, running)"]
    assert "name one GPU twice" in referee(claimed_body(_body(gpus=2), ("2", "2")), [])[0]
    assert referee(claimed_body(_body(gpus=2), ("2", "3")), holding) == []


def test_a_proxy_refusal_for_a_collision_is_read_back_as_held_gpus():
    message = f"dood-proxy: {COLLISION}: GPU 1 is held by a (x, running); GPU 3 is held by b (y, created)"
    assert refused_as_held(message) == ("1", "3")
    assert refused_as_held("dood-proxy: the container breaks the dood policy: ...") is None


# --- dood-gpus ---


def test_dood_gpus_lists_each_gpu_free_or_held():
    labels = {"dood.dag_id": "d", "dood.task_id": "t", "dood.run_id": "r", "dood.try_number": "1"}
    holding = holders([_listed("c", "running", "1,7", **labels)], created_hold_seconds=0)
    rows = table(("0", "1"), holding)
    assert [(row["gpu"], row["state"], row["listed"]) for row in rows] == [
        ("0", "free", True),
        ("1", "held", True),
        ("7", "held", False),
    ]
    assert rows[1]["holder"]["task_id"] == "t"
    shown = render("unix:///var/run/docker.sock", ("0", "1"), holding)
    assert "2 in gpus.devices, 1 free, 2 held" in shown
    assert "GPU 1    held by d/t/r try 1 (c, running)" in shown
    assert "GPU 7    held by d/t/r try 1 (c, running)  (not in gpus.devices)" in shown


# --- the queue: first come, first served ---


def _ticket(key: int, wants: str, until: float = NOW + 60, cid: str | None = None, waiter: str = "") -> dict:
    labels = {
        TICKET_LABEL: ticket_key(key),
        TICKET_WANTS_LABEL: wants,
        TICKET_UNTIL_LABEL: f"{until:.3f}",
        TICKET_FOR_LABEL: waiter,
    }
    return {"Id": cid or f"t{key}-{until}", "Names": [f"/ticket-{key}"], "State": "created", "Labels": labels}


def test_tickets_are_oldest_first_one_per_key_and_expired_ones_do_not_count():
    listed = [_ticket(30, "1"), _ticket(10, "2"), _ticket(20, "all", until=NOW - 1), _ticket(10, "2", until=NOW + 90)]
    queue = tickets(listed, daemon_now=NOW)
    assert [(t.key, t.wants) for t in queue] == [(ticket_key(10), 2), (ticket_key(30), 1)]
    assert queue[0].until == NOW + 90  # of a renewal's two tickets, the renewed one
    assert expired(listed, daemon_now=NOW) == [f"t20-{NOW - 1}"]


def test_freed_gpus_go_to_the_oldest_waiters_and_a_big_request_stops_everyone_behind_it():
    devices = ("0", "1", "2", "3")
    holding = holders([_listed("h", "running", "0,1")], created_hold_seconds=0, now=NOW)
    queue = tickets([_ticket(10, "1"), _ticket(20, "all"), _ticket(30, "1")], daemon_now=NOW)
    assert served(devices, holding, queue, key=ticket_key(10), wanted=1) == ("2",)
    assert served(devices, holding, queue, key=ticket_key(20), wanted="all") is None
    assert served(devices, holding, queue, key=ticket_key(30), wanted=1) is None  # GPU 3 is free, not its turn
    assert served(devices, holding, queue, key=ticket_key(99), wanted=1) is None  # nor a newcomer's
    # once the oldest is served (its holder says so) its ticket no longer counts, even before it is removed
    taken = holders(
        [_listed("h", "running", "0,1"), _listed("s", "running", "2", **{SERVED_LABEL: ticket_key(10)})],
        created_hold_seconds=0,
        now=NOW,
    )
    assert served(devices, taken, queue, key=ticket_key(20), wanted="all") is None
    assert served(devices, [], queue, key=ticket_key(20), wanted="all") is None  # the oldest takes GPU 0 first
    assert served(devices, [], queue[1:], key=ticket_key(20), wanted="all") == devices
    assert served(devices, [], [], key=ticket_key(5), wanted=2) == ("0", "1")


def _event(action: str, cid: str, **attributes: str) -> dict:
    return {"Type": "container", "Action": action, "Actor": {"ID": cid, "Attributes": attributes}}


def test_a_waiter_looks_again_only_when_the_events_say_it_may_be_its_turn():
    devices = ("0", "1", "2", "3")
    holding = holders([_listed("a", "running", "0"), _listed("b", "running", "1,2,3")], created_hold_seconds=0, now=NOW)
    queue = tickets([_ticket(10, "1"), _ticket(20, "1"), _ticket(30, "2")], daemon_now=NOW)
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
    holding = holders([_listed("a", "running", "0"), _listed("b", "running", "1")], created_hold_seconds=0, now=NOW)
    head = Wakeup(devices, ticket_key(10), 1)
    head.looked(holding, tickets([_ticket(10, "1")], daemon_now=NOW))
    assert not head.saw(_event("create", "a" * 8, **{GPUS_LABEL: "0"}))  # already counted as held
    assert head.saw(_event("die", "a" * 8, **{GPUS_LABEL: "0"}))


def test_a_holder_seen_dying_no_longer_holds_even_while_the_list_still_shows_it_running():
    """Right after a die event the engine's list can still show the container running: a waiter that saw the
    event leaves it out of its look, or it would go back to sleep with the GPUs free."""
    devices = ("0", "1")
    listed = [_listed("a", "running", "0,1")]
    ended: set[str] = set()
    waiter = Wakeup(devices, ticket_key(10), "all", ended=ended)
    waiter.looked(holders(listed, created_hold_seconds=0, now=NOW), [])
    assert waiter.saw(_event("die", "a" * 8, **{GPUS_LABEL: "0,1"}))
    assert ended == {"a" * 8}
    looked_again = still_holding(holders(listed, created_hold_seconds=0, now=NOW), ended)
    assert looked_again == [] and served(devices, looked_again, [], key=ticket_key(10), wanted="all") == devices
