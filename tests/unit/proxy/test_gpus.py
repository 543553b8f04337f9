"""dood-proxy's GPU referee without an engine: DeviceIDs canonicalised, GPU names and labels to their exact shapes,
tickets checked against the inventory, the policy and the daemon's clock; the launcher's side of distrust."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timezone

import pytest
from docker.errors import APIError

from dood.config.gpu_inventory import GpuInventory
from dood.gpus.holdings import (
    GPUS_LABEL,
    LOCK_NAME,
    PROXY_TAKES_LOCK,
    SERVED_LABEL,
    canonical_device_ids,
    holders,
    refused_as_held,
)
from dood.gpus.lock import REFEREED, EngineLock
from dood.gpus.queue import KEY_NOT_CURRENT, Stalls, ticket_body, ticket_key, tickets
from dood.naming import STACK_LABEL
from dood.proxy.allow_list import Refused
from dood.proxy.gpus import GpuReferee, _kind, configured_inventory
from tests.unit.gpus.listings import NOW, holder_entry, ticket_entry


def _gpu_body(*ids: str) -> dict:
    return {"Image": "i", "HostConfig": {"DeviceRequests": [{"Capabilities": [["gpu"]], "DeviceIDs": list(ids)}]}}


# --- DeviceIDs: the inventory's own ids ---


def test_without_an_inventory_only_plain_indexes_pass():
    body = _gpu_body("0", "12", " 3")
    assert canonical_device_ids(body, None) == []
    assert body["HostConfig"]["DeviceRequests"][0]["DeviceIDs"] == ["0", "12", "3"]
    for alias in ("00", "GPU-8f6e", "all", "-1", "+1", ""):
        problems = canonical_device_ids(_gpu_body("1", alias), None)
        assert len(problems) == 1 and problems[0].startswith("HostConfig.DeviceRequests[0].DeviceIDs[1]:"), alias
        assert "not a plain GPU index" in problems[0] and "gpus.devices" in problems[0]


def test_with_an_inventory_every_spelling_becomes_the_gpus_id_and_others_are_refused():
    aliases = {"0": "0", "1": "1", "GPU-aaa": "0", "GPU-bbb": "1"}
    body = _gpu_body("GPU-bbb,0")
    assert canonical_device_ids(body, aliases, known_as="the record") == []
    assert body["HostConfig"]["DeviceRequests"][0]["DeviceIDs"] == ["1", "0"]
    problems = canonical_device_ids(_gpu_body("7", "00", "gpu-aaa"), aliases, known_as="the record")
    assert [p.split(":")[0] for p in problems] == [f"HostConfig.DeviceRequests[0].DeviceIDs[{i}]" for i in range(3)]
    assert "its GPUs: ['0', '1'], the record" in problems[0]
    assert canonical_device_ids(_gpu_body(7), aliases) == [
        "HostConfig.DeviceRequests[0].DeviceIDs: must be a list of GPU ids (strings)"
    ]  # type: ignore[arg-type]


def test_the_config_gives_the_proxy_its_hosts_inventory(tmp_path):
    path = tmp_path / "dood.yaml"
    path.write_text(
        "gpus:\n  devices: ['0', '1']\n"
        "hosts:\n  b:\n    docker: {url: 'tcp://b:2376'}\n    gpus: {devices: ['GPU-x']}\n"
    )
    assert configured_inventory(path).devices == ("0", "1")
    assert configured_inventory(path, "b").devices == ("GPU-x",)
    assert configured_inventory(path, "c").devices == ("0", "1")
    assert configured_inventory(None).devices == ()


# --- names and labels ---


@pytest.mark.parametrize(
    ("name", "labels", "fragment"),
    [
        (LOCK_NAME, {}, PROXY_TAKES_LOCK),
        ("/" + LOCK_NAME, {}, PROXY_TAKES_LOCK),
        (None, {"dood.gpu_lock": "x"}, PROXY_TAKES_LOCK),
        (None, {"dood.gpu_other": "1"}, "dood.gpu* labels are dood's GPU bookkeeping"),
        ("dood-gpu-probe", {"dood.gpu_ticket": "1"}, "not both"),
    ],
)
def test_the_lock_and_unknown_gpu_names_and_labels_are_refused(name, labels, fragment):
    with pytest.raises(Refused, match=fragment.replace("*", r"\*")) as caught:
        _kind((name or "").lstrip("/") or None, labels)
    assert caught.value.status == 403


def test_tickets_and_the_probe_are_told_apart_by_name_or_label():
    assert _kind("dood-gpu-ticket-x", {}) == "ticket"
    assert _kind(None, {"dood.gpu_wants": "1"}) == "ticket"
    assert _kind("dood-gpu-probe", {}) == "probe"
    assert _kind(None, {"dood.gpu_probe": "img"}) == "probe"
    assert _kind("dood-train", {GPUS_LABEL: "1"}) == "plain"


# --- the referee with a fake daemon (pure: canned answers) ---


class FakeDaemon:
    def __init__(self, listed=(), tickets_listed=()):
        self.listed = list(listed)
        self.tickets_listed = list(tickets_listed)
        self.calls: list[tuple[str, str]] = []

    async def call(self, method: str, target: str, body: bytes = b""):
        self.calls.append((method, target.split("?")[0]))
        if target.endswith("/info"):
            return 200, json.dumps({"SystemTime": datetime.now(timezone.utc).isoformat()}).encode()
        if "dood-gpu-probe" in target:
            return 404, b'{"message": "No such container"}'
        if method == "POST":
            return 201, b'{"Id": "lock-id"}'
        if method == "DELETE":
            return 204, b""
        if "dood.gpu_ticket" in target:
            return 200, json.dumps(self.tickets_listed).encode()
        return 200, json.dumps(self.listed).encode()


def _check(referee: GpuReferee, body: dict, name: str | None = None) -> dict:
    async def run():
        async with referee.checked(body, "/v1.41", name=name):
            pass

    asyncio.run(run())
    return body


def _referee(daemon=None, **inventory):
    return GpuReferee(
        daemon or FakeDaemon(), inventory=GpuInventory(devices=("0", "1", "2", "3"), **inventory), max_gpus=2
    )


def test_a_gpu_less_create_keeps_no_gpu_label_and_takes_no_lock():
    daemon = FakeDaemon()
    body = _check(_referee(daemon), {"Image": "i", "Labels": {GPUS_LABEL: "1", SERVED_LABEL: "0" * 20, "a": "b"}})
    assert body["Labels"] == {"a": "b"} and daemon.calls == []


def test_a_gpu_create_is_checked_under_the_engine_lock_and_labelled():
    daemon = FakeDaemon(listed=[holder_entry("h", "running", "1", created=time.time())])
    referee = _referee(daemon)
    body = _check(referee, {**_gpu_body("0"), "Labels": {GPUS_LABEL: "3"}})
    assert body["Labels"][GPUS_LABEL] == "0"
    assert [c for c in daemon.calls] == [
        ("POST", "/v1.41/containers/create"),
        ("GET", "/v1.41/containers/json"),
        ("DELETE", "/v1.41/containers/lock-id"),
    ]
    with pytest.raises(Refused, match="GPU 1 is held by"):
        _check(referee, _gpu_body("1"))
    with pytest.raises(Refused, match="is not a GPU of this Docker host"):
        _check(referee, _gpu_body("7"))


def _ticket(key: str | None = None, wanted="1", until: float | None = None, stack="a", **extra) -> tuple[dict, str]:
    key = key or ticket_key(time.time_ns())
    body = ticket_body(
        image="i", user="1000:1000", key=key, wanted=1, until=until or time.time() + 60, waiter="", labels={}
    )
    body["Labels"].update({"dood.gpu_wants": wanted, STACK_LABEL: stack})
    return {**body, **extra}, f"dood-gpu-ticket-{key}-abc123"


@pytest.mark.parametrize(
    ("ticket", "fragment"),
    [
        (_ticket(wanted="3"), "at most 2"),  # policy.max_gpus
        (_ticket(wanted="all"), "over policy.max_gpus"),
        (_ticket(wanted="0"), "not a GPU count"),
        (_ticket(until=99999999999), "more than a lease"),
        (_ticket(key="0" * 20), KEY_NOT_CURRENT),
        (_ticket(key="9" * 20), KEY_NOT_CURRENT),
        (_ticket(Env=["LD_PRELOAD=/x"]), "a ticket sets only"),
        (_ticket(Cmd=["sh"]), "a ticket's is ['true']"),
        (_ticket(HostConfig={"Binds": ["/a:/b"]}), "HostConfig ['Binds']"),
        ((_ticket()[0], "dood-gpu-ticket-1-abc123"), "a GPU ticket is named"),
    ],
)
def test_forged_tickets_are_refused(ticket, fragment):
    body, name = ticket
    with pytest.raises(Refused, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        _check(_referee(), body, name)


def test_a_ticket_as_dood_places_it_passes_and_its_key_may_be_placed_again_by_its_stack():
    referee = _referee()
    old = ticket_key(time.time_ns() - 3600 * 10**9)
    with pytest.raises(Refused, match=KEY_NOT_CURRENT):
        _check(referee, *_ticket(key=old))
    referee._remember("a", old)  # placed through this proxy an hour ago (its trigger restarted since)
    _check(referee, *_ticket(key=old))
    with pytest.raises(Refused, match=KEY_NOT_CURRENT):
        _check(referee, *_ticket(key=old, stack="b"))  # not another stack's
    fresh, name = _ticket()
    assert _check(referee, fresh, name)["Labels"]["dood.gpu_ticket"] == name.split("-")[3]


def test_a_live_ticket_of_the_stack_vouches_for_its_key():
    old = 10**18  # far in the past
    live = ticket_entry(old, "1", until=time.time() + 30)
    _check(_referee(FakeDaemon(tickets_listed=[live])), *_ticket(key=ticket_key(old)))


# --- the launcher's side: tickets it does not trust ---


def test_tickets_no_waiter_could_have_placed_are_left_out():
    listed = [
        ticket_entry(10, "5"),  # more GPUs than the host has
        ticket_entry(20, "1", until=NOW + 10_000),  # a lease far beyond any renewal
        {**ticket_entry(30, "1"), "Labels": {**ticket_entry(30, "1")["Labels"], "dood.gpu_ticket": "x"}},
        ticket_entry(40, "1"),
    ]
    queue = tickets(listed, daemon_now=NOW, devices=("0", "1", "2", "3"), lease_seconds=120)
    assert [t.key for t in queue] == [ticket_key(40)]
    assert len(tickets(listed, daemon_now=NOW)) == 3  # without the inventory: only the malformed key goes


def test_a_ticket_in_turn_that_nobody_claims_with_is_passed_over_after_the_grace():
    now = [0.0]
    stalls = Stalls(10, clock=lambda: now[0])
    devices = ("0", "1")
    queue = tickets([ticket_entry(10, "2"), ticket_entry(20, "1")], daemon_now=NOW)
    assert stalls.queue(devices, [], queue, own=ticket_key(20)) == queue
    now[0] = 9.9
    assert stalls.queue(devices, [], queue, own=ticket_key(20)) == queue
    now[0] = 10
    assert [t.key for t in stalls.queue(devices, [], queue, own=ticket_key(20))] == [ticket_key(20)]
    # not in turn while GPU 0 is held: its clock starts over once it is in turn again
    held = holders([holder_entry("h", "running", "0")], created_hold_seconds=0, now=NOW)
    fresh = Stalls(10, clock=lambda: now[0])
    assert fresh.queue(devices, held, queue) == queue
    now[0] = 30
    assert fresh.queue(devices, held, queue) == queue  # ticket 10 not in turn (GPU 0 held): never passed over


def test_behind_the_proxy_the_launchers_lock_is_the_proxys():
    class Api:
        creates = 0

        def create_container_from_config(self, body, name):
            Api.creates += 1
            response = type("R", (), {"status_code": 403, "reason": "Forbidden"})()
            raise APIError("refused", response=response, explanation=f"{PROXY_TAKES_LOCK} around every create")

    lock = EngineLock(Api(), image="i", user=None, stale_seconds=30)  # type: ignore[arg-type]
    assert lock.acquire() == REFEREED and lock.acquire() == REFEREED and Api.creates == 1
    assert lock.holds(REFEREED) and lock.released(REFEREED)


# --- starts: an exited container's GPUs may be another's by now ---


def _inspected(cid: str, *ids: str, label: str | None = None) -> dict:
    return {
        "Id": cid * 8,
        "Name": f"/{cid}",
        "Image": "sha256:" + "ab" * 32,
        "Config": {"Labels": {GPUS_LABEL: ",".join(ids) if label is None else label}},
        "HostConfig": {"DeviceRequests": [{"Capabilities": [["gpu"]], "Count": 0, "DeviceIDs": list(ids)}]},
    }


def _start(referee: GpuReferee, inspected: dict, during=lambda: None) -> None:
    async def run():
        async with referee.starting(inspected, "/v1.41"):
            during()

    asyncio.run(run())


def test_a_start_without_named_gpus_makes_no_daemon_call():
    daemon = FakeDaemon(listed=[holder_entry("h", "running", "0")])
    _start(_referee(daemon), {"Id": "x" * 64, "Config": {"Labels": {}}, "HostConfig": {"Binds": []}})
    probe = {"Id": "p" * 64, "HostConfig": {"DeviceRequests": [{"Capabilities": [["gpu", "utility"]], "Count": -1}]}}
    _start(_referee(daemon), probe)  # discovery's probe: counted, holding none
    assert daemon.calls == []


def test_a_start_is_refused_while_another_container_holds_its_gpu_and_the_lock_spans_the_start():
    other = holder_entry("b", "running", "1,0", created=time.time(), **{STACK_LABEL: "b"})
    daemon = FakeDaemon(listed=[holder_entry("a", "exited", "0"), other])
    with pytest.raises(Refused, match="refusing to start a: the container's GPUs would collide") as caught:
        _start(_referee(daemon), _inspected("a", "0"))
    assert caught.value.status == 403 and refused_as_held(caught.value.reason) == ("0",)  # the launcher's reading
    assert daemon.calls[-1] == ("DELETE", "/v1.41/containers/lock-id")  # released

    # its own holding (created, or running for a start that answers 304) is no collision; an exited other is none
    daemon = FakeDaemon(
        listed=[holder_entry("a", "created", "0", created=time.time()), holder_entry("c", "exited", "0")]
    )
    seen = []
    _start(_referee(daemon), _inspected("a", "0"), during=lambda: seen.extend(daemon.calls))
    assert seen == [("POST", "/v1.41/containers/create"), ("GET", "/v1.41/containers/json")]  # held while starting
    assert daemon.calls[len(seen) :] == [("DELETE", "/v1.41/containers/lock-id")]


def test_a_start_whose_label_is_not_its_gpus_is_refused():
    for label in ("", "1", "0,1"):
        daemon = FakeDaemon()
        with pytest.raises(Refused, match=r"its GPUs \['0'\] \(HostConfig.DeviceRequests\) are not its label"):
            _start(_referee(daemon), _inspected("a", "0", label=label))
        assert daemon.calls == []
