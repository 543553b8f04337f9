"""dood-proxy --read-only: only list, inspect, one stats sample and log tails pass; everything else 403. Tails
are bounded, inspects come without the environment."""

from __future__ import annotations

import json

import pytest

from dood.proxy import allow_list as rules
from dood.proxy import readonly
from dood.proxy.allow_list import Refused


def _route(method: str, raw: str):
    return readonly.route(method, rules.parse_target(raw))


@pytest.mark.parametrize(
    ("method", "raw", "kind", "action"),
    [
        ("GET", "/_ping", "relay", "ping"),
        ("HEAD", "/v1.41/_ping", "relay", "ping"),
        ("GET", "/v1.41/version", "relay", "version"),
        ("GET", "/info", "relay", "info"),
        ("GET", '/v1.41/containers/json?all=1&filters={"label":["dood.managed=true"]}', "list", "list"),
        ("GET", "/v1.41/containers/abc123/json", "container", "json"),
        ("GET", "/v1.41/containers/abc123/logs?stdout=1&stderr=1&tail=200&follow=0", "container", "logs"),
        ("GET", "/v1.41/containers/abc123/stats?stream=False&one-shot=True", "container", "stats"),
        ("GET", "/v1.41/images/dood-test-busybox:latest/json", "image", "image.inspect"),
    ],
)
def test_reads_pass(method, raw, kind, action):
    route = _route(method, raw)
    assert (route.kind, route.action) == (kind, action)


@pytest.mark.parametrize(
    ("method", "raw"),
    [
        ("POST", "/v1.41/containers/create?name=x"),
        ("POST", "/v1.41/containers/abc/start"),
        ("POST", "/v1.41/containers/abc/stop"),
        ("POST", "/v1.41/containers/abc/kill"),
        ("POST", "/v1.41/containers/abc/wait"),
        ("POST", "/v1.41/containers/abc/attach?stream=1&stdout=1"),
        ("DELETE", "/v1.41/containers/abc"),
        ("POST", "/v1.41/containers/abc/exec"),
        ("POST", "/v1.41/images/create?fromImage=busybox"),
        ("POST", "/v1.41/auth"),
        ("POST", "/dood/v1/directories"),
        ("GET", "/dood/v1/info"),
        ("GET", "/v1.41/events"),
        ("GET", "/v1.41/networks"),
        ("GET", "/v1.41/containers/abc/logs?follow=1&stdout=1"),  # a stream held open: not on this listener
        ("GET", "/v1.41/containers/abc/stats"),  # stream defaults to true
        ("GET", "/v1.41/containers/abc/stats?stream=1"),
        ("GET", "/v1.41/containers/abc/archive?path=/"),
        ("GET", "/v1.41/containers/abc/export"),
        ("GET", "/v1.41/system/df"),
        ("POST", "/v1.41/containers/abc/update"),
        ("POST", "/v1.41/build"),
    ],
)
def test_everything_else_is_refused(method, raw):
    with pytest.raises(Refused) as refused:
        _route(method, raw)
    assert refused.value.status == 403
    assert "read-only listener" in refused.value.reason


def test_unknown_query_parameters_are_refused():
    with pytest.raises(Refused) as refused:
        _route("GET", "/v1.41/containers/abc/logs?stdout=1&details=1")
    assert refused.value.status == 403


def test_malformed_targets_stay_400():
    with pytest.raises(Refused) as refused:
        _route("GET", "/v1.41/containers/../json")
    assert refused.value.status == 400


def test_the_normal_listener_still_refuses_stats():
    """The read-only table is separate: the normal allow-list is unchanged."""
    with pytest.raises(Refused):
        rules.route("GET", rules.parse_target("/v1.41/containers/abc/stats?stream=0"))
    assert rules.route("POST", rules.parse_target("/v1.41/containers/create")).kind == "create"


def test_the_server_uses_the_read_only_table():
    server = readonly.ReadOnlyProxyServer.__new__(readonly.ReadOnlyProxyServer)
    with pytest.raises(Refused):
        server.route("POST", rules.parse_target("/containers/create"))
    assert server.route("GET", rules.parse_target("/containers/abc/stats?stream=0")).action == "stats"


@pytest.mark.parametrize(
    ("asked", "sent"),
    [
        (None, "1000"),  # the docker SDK's default is every line
        ("all", "1000"),
        ("ALL", "1000"),
        ("-1", "1000"),  # the daemon reads a negative tail as every line
        (" 5", "1000"),  # ... and anything Go's Atoi refuses
        ("+5", "1000"),
        ("", "1000"),
        ("0", "0"),
        ("200", "200"),
        ("1000", "1000"),
        ("1001", "1000"),
        ("99999999999", "1000"),
    ],
)
def test_log_tails_are_bounded(asked, sent):
    query = {"stdout": "1"} if asked is None else {"stdout": "1", "tail": asked}
    assert readonly.bounded_tail(query) == {"stdout": "1", "tail": sent}


def test_inspect_answers_carry_no_environment():
    inspected = {
        "Id": "abc",
        "Args": ["--epochs", "3"],
        "Config": {"Env": ["TOKEN=s3cret", "PATH=/bin"], "Cmd": ["train"], "Labels": {"dood.managed": "true"}},
        "ContainerConfig": {"Env": ["BUILD_TOKEN=x"]},  # an image's inspect
        "HostConfig": {"Memory": 1},
    }
    shown = json.loads(readonly.without_environment(json.dumps(inspected).encode()))
    assert "Env" not in shown["Config"] and "Env" not in shown["ContainerConfig"]
    assert shown["Config"]["Cmd"] == ["train"] and shown["Args"] == ["--epochs", "3"]
    assert shown["Config"]["Labels"] == {"dood.managed": "true"} and shown["HostConfig"] == {"Memory": 1}
    assert b"s3cret" not in readonly.without_environment(json.dumps(inspected).encode())


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]"])
def test_an_unreadable_inspect_is_a_502(body):
    with pytest.raises(Refused) as refused:
        readonly.without_environment(body)
    assert refused.value.status == 502
