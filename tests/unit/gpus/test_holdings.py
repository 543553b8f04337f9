"""Holdings read from the engine's list, the choice of GPUs, what a body asks for, the proxy's referee."""

from __future__ import annotations

from docker.types import DeviceRequest

from dood.config.resources import Resources
from dood.gpus.holdings import (
    COLLISION,
    GPUS_LABEL,
    asked,
    choose,
    claimed_body,
    held_by,
    holders,
    named,
    never_fits,
    referee,
    refused_as_held,
)
from tests.unit.gpus.listings import NOW, holder_entry


def _body(**resources) -> dict:
    request = Resources(**resources).host_config_kwargs()["device_requests"][0]
    return {"Image": "x", "Labels": {"a": "b"}, "HostConfig": {"DeviceRequests": [dict(request)]}}


# --- what the engine says is held ---


def test_running_paused_and_freshly_created_containers_hold_their_gpus():
    listed = [
        holder_entry("run", "running", "0"),
        holder_entry("pause", "paused", "1,2"),
        holder_entry("new", "created", "3", created=NOW - 5),
        holder_entry("old", "created", "4", created=NOW - 600),  # its creator died before starting it
        holder_entry("done", "exited", "5"),
        holder_entry("dead", "dead", "6"),
        holder_entry("gone", "removing", "7"),
    ]
    found = holders(listed, created_hold_seconds=120, now=NOW)
    assert sorted(held_by(found)) == ["0", "1", "2", "3"]
    assert held_by(found)["2"].name == "pause"


def test_a_holder_describes_its_task():
    labels = {"dood.dag_id": "d", "dood.task_id": "train", "dood.run_id": "r1", "dood.try_number": "2"}
    (holder,) = holders([holder_entry("c", "running", "1", **labels)], created_hold_seconds=0, now=NOW)
    assert holder.describe() == "d/train/r1 try 2 (c, running)"
    (mapped,) = holders(
        [holder_entry("m", "running", "1", **labels, **{"dood.map_index": "3"})], created_hold_seconds=0
    )
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
        [holder_entry("c", "running", "1", **{"dood.dag_id": "d", "dood.task_id": "t", "dood.run_id": "r"})],
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
