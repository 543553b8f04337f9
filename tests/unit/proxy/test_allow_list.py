"""dood-proxy's decisions (dood.proxy.allow_list), without a socket: targets, the allow-list, rewrites, logins,
network views. Request framing is tests/unit/proxy/test_wire.py; daemon endpoints test_proxy_daemon.py."""

from __future__ import annotations

import json

import pytest

from dood.proxy.allow_list import (
    Refused,
    login_body,
    network_view,
    parse_target,
    pull_reference,
    route,
    with_label_filter,
)

CID = "a" * 64


def decide(method: str, target: str):
    return route(method, parse_target(target))


# --- targets ---


def test_targets_are_decoded_once_and_re_encoded_canonically():
    target = parse_target("/v1.41/images/registry.example.com%3A5000/ml/train%40sha256%3Aabc/json")
    assert target.version == "1.41"
    assert target.path == "/images/registry.example.com:5000/ml/train@sha256:abc/json"
    assert target.uri() == "/v1.41/images/registry.example.com:5000/ml/train@sha256:abc/json"
    listing = parse_target("/containers/json?all=1&filters=%7B%22label%22%3A%5B%22a%3Db%22%5D%7D")
    assert listing.version is None
    assert listing.query == {"all": "1", "filters": '{"label":["a=b"]}'}
    assert listing.uri(query={"all": "1"}) == "/containers/json?all=1"


@pytest.mark.parametrize(
    "target",
    [
        "/v1.41/containers/../images/x/json",
        "/containers/abc/./json",
        "/v1.41//containers/json",
        "/containers/json/",
        "/containers/abc%2F..%2Fxyz/json",
        "/containers/%2e%2e/json",
        "/containers/abc%252Fx/json",  # double encoding
        "/containers/abc%zz/json",
        "/containers/json?all=1&all=0",  # which one would the daemon read?
        "/containers/json#frag",
        "/v1.23/containers/abc/start",  # before 1.24, start accepted a HostConfig of its own
        "/v1.12/containers/create",
    ],
)
def test_ambiguous_or_old_targets_are_refused(target):
    with pytest.raises(Refused) as caught:
        decide("POST", target)
    assert caught.value.status == 400


# --- the allow-list ---


@pytest.mark.parametrize(
    ("method", "target", "kind", "action"),
    [
        ("GET", "/_ping", "relay", "ping"),
        ("HEAD", "/_ping", "relay", "ping"),
        ("GET", "/v1.41/version", "relay", "version"),
        ("GET", "/info", "relay", "info"),
        ("POST", "/v1.41/auth", "auth", "auth"),
        ("GET", "/v1.45/images/dood-ml-example:latest/json", "image", "image.inspect"),
        ("POST", "/v1.41/images/create?fromImage=busybox&tag=latest", "pull", "image.pull"),
        ("POST", "/v1.41/containers/create?name=dood-x-t1-abc", "create", "create"),
        ("GET", "/v1.41/containers/json?all=1&limit=-1&size=0&trunc_cmd=0", "list", "list"),
        ("GET", "/v1.41/events?since=1&filters=%7B%7D", "events", "events"),
        ("GET", "/v1.41/networks", "network", "network.list"),
        ("GET", "/v1.41/networks/dood-net", "network", "network.inspect"),
        ("POST", f"/v1.41/containers/{CID}/start", "container", "start"),
        ("POST", "/v1.41/containers/dood-x-t1-abc/stop?t=30", "container", "stop"),
        ("POST", f"/v1.41/containers/{CID}/kill?signal=SIGKILL", "container", "kill"),
        ("POST", f"/v1.41/containers/{CID}/wait", "container", "wait"),
        ("GET", f"/v1.41/containers/{CID}/logs?follow=1&stdout=1&stderr=1&tail=all", "container", "logs"),
        ("POST", f"/v1.41/containers/{CID}/attach?stream=1&stdin=1&stdout=1", "container", "attach"),
        ("GET", f"/v1.41/containers/{CID}/json", "container", "json"),
        ("DELETE", f"/v1.41/containers/{CID}?v=True&link=False&force=True", "container", "remove"),
    ],
)
def test_allowed_calls(method, target, kind, action):
    decision = decide(method, target)
    assert (decision.kind, decision.action) == (kind, action)
    assert decision.upgrade == (action == "attach")


def test_container_calls_carry_the_container_to_check():
    assert decide("POST", "/containers/dood-x-t1-abc/stop").container == "dood-x-t1-abc"
    assert decide("DELETE", f"/containers/{CID}").container == CID


@pytest.mark.parametrize(
    ("method", "target", "reason"),
    [
        ("POST", f"/v1.41/containers/{CID}/exec", "exec runs commands"),
        ("POST", "/v1.41/exec/abc/start", "exec runs commands"),
        ("POST", "/v1.41/build?t=x", "building images"),
        ("POST", "/session", "building images"),
        ("POST", "/v1.41/swarm/init", "swarm"),
        ("GET", "/v1.41/secrets", "swarm"),
        ("POST", "/v1.41/services/create", "swarm"),
        ("POST", "/v1.41/plugins/pull?remote=x", "plugins"),
        ("GET", "/v1.41/plugins", "plugins"),
        ("POST", "/v1.41/volumes/create", "volumes"),
        ("POST", f"/v1.41/commit?container={CID}", "committing"),
        ("PUT", f"/v1.41/containers/{CID}/archive?path=/", "copying files"),
        ("GET", f"/v1.41/containers/{CID}/archive?path=/", "copying files"),
        ("POST", f"/v1.41/containers/{CID}/update", "not needed by dood"),
        ("POST", f"/v1.41/containers/{CID}/rename?name=x", "not needed by dood"),
        ("POST", "/v1.41/images/load", "only inspecting and pulling"),
        ("POST", "/v1.41/images/x/tag?repo=y", "only inspecting and pulling"),
        ("DELETE", "/v1.41/images/x", "only inspecting and pulling"),
        ("POST", "/v1.41/networks/create", "read-only"),
        ("POST", "/v1.41/networks/n/connect", "read-only"),
        ("POST", "/v1.41/containers/prune", "allow-list"),
        ("GET", "/v1.41/system/df", "not needed by dood"),
        ("PUT", "/v1.41/containers/create", "allow-list"),
    ],
)
def test_everything_else_is_refused_with_a_reason(method, target, reason):
    with pytest.raises(Refused) as caught:
        decide(method, target)
    assert caught.value.status == 403
    assert reason in caught.value.message
    assert caught.value.message.startswith("dood-proxy: ")


@pytest.mark.parametrize(
    "target",
    [
        f"/containers/{CID}?link=1",  # removes a link, not the container
        f"/containers/{CID}?link=true",
        f"/containers/{CID}/start?checkpoint=c1",
        "/images/create?fromSrc=-",  # an import: the body becomes an image
        "/images/create?fromImage=x&repo=y",
        "/containers/create?name=x&bogus=1",
    ],
)
def test_dangerous_query_parameters_are_refused(target):
    method = "DELETE" if "link" in target else "POST"
    with pytest.raises(Refused) as caught:
        decide(method, target)
    assert caught.value.status == 403


# --- rewrites ---


def test_pull_references():
    assert pull_reference({"fromImage": "busybox", "tag": "1.36"}) == "busybox:1.36"
    assert pull_reference({"fromImage": "busybox", "tag": "sha256:abc"}) == "busybox@sha256:abc"
    assert pull_reference({"fromImage": "reg:5000/ml/x:2"}) == "reg:5000/ml/x:2"
    assert pull_reference({"fromImage": "reg:5000/ml/x"}) == "reg:5000/ml/x:*"  # no tag pulls every tag
    with pytest.raises(Refused):
        pull_reference({"tag": "x"})


def test_the_ownership_label_is_added_to_filters_in_every_form():
    label = "dood.managed=true"

    def filters(query):
        return json.loads(with_label_filter(query, label)["filters"])

    assert filters({}) == {"label": {label: True}}
    assert filters({"filters": '{"label": ["team=ml"], "status": ["exited"]}'}) == {
        "label": {"team=ml": True, label: True},
        "status": {"exited": True},
    }
    assert filters({"filters": '{"label": {"team=ml": true}}'}) == {"label": {"team=ml": True, label: True}}
    # A `false` in the map form still filters in the daemon: it is normalised, never trusted to exclude.
    assert filters({"filters": '{"label": {"dood.managed=true": false}}'}) == {"label": {label: True}}
    assert with_label_filter({"all": "1"}, label)["all"] == "1"
    for bad in ('{"label": "x"}', "[1]", '{"label": [], "label": ["x"]}', "{"):
        with pytest.raises(Refused) as caught:
            with_label_filter({"filters": bad}, label)
        assert caught.value.status == 400


# --- registry login: only to registries the policy names ---

REGISTRIES = frozenset({"registry.example.com", "reg.internal:5000"})


@pytest.mark.parametrize(
    "address",
    [
        "registry.example.com",
        "https://registry.example.com/v2/",
        "http://REGISTRY.example.com",
        "reg.internal:5000",
        "https://reg.internal:5000/v1/",
    ],
)
def test_logins_to_named_registries_are_passed_in_canonical_form(address):
    sent = login_body(json.dumps({"Username": "u", "PASSWORD": "p", "serveraddress": address}).encode(), REGISTRIES)
    assert json.loads(sent) == {"username": "u", "password": "p", "serveraddress": address}


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1:1",  # any port: the daemon's error tells whether it is open
        "registry.example.com:22",
        "reg.internal",  # another port than the one named
        "registry.example.com.attacker.example",
        "https://registry.example.com@attacker.example/",
        "https://attacker.example#@registry.example.com",
        "registry.example.com\t",
        "",  # Docker Hub: not named
        None,
        42,
    ],
)
def test_logins_anywhere_else_are_refused(address):
    with pytest.raises(Refused) as caught:
        login_body(json.dumps({"username": "u", "password": "p", "serveraddress": address}).encode(), REGISTRIES)
    assert caught.value.status == 403
    assert "registry login to" in caught.value.reason


def test_docker_hub_logins_need_hub_named():
    with pytest.raises(Refused):
        login_body(b'{"username": "u", "password": "p"}', REGISTRIES)
    sent = login_body(b'{"username": "u", "password": "p"}', frozenset({"docker.io"}))
    assert json.loads(sent) == {"username": "u", "password": "p"}


@pytest.mark.parametrize(
    "raw",
    [
        b'{"serveraddress": "registry.example.com", "ServerAddress": "127.0.0.1:22"}',  # Go keeps the last
        '{"serveraddre\u017fs": "127.0.0.1:22", "serveraddress": "registry.example.com"}'.encode(),  # folds to s
        b'{"serveraddress": "registry.example.com", "proxy": "x"}',
        b'["registry.example.com"]',
        b'{"serveraddress": "registry.example.com",',
    ],
)
def test_ambiguous_login_bodies_are_malformed(raw):
    with pytest.raises(Refused) as caught:
        login_body(raw, REGISTRIES)
    assert caught.value.status == 400


# --- networks: only dood's containers are shown ---


def test_network_views_show_only_dood_containers_and_no_swarm_details():
    ours, theirs = "a" * 64, "b" * 64
    inspect = {
        "Name": "bridge",
        "Containers": {ours: {"Name": "dood-x", "IPv4Address": "172.17.0.2/16"}, theirs: {"Name": "postgres"}},
        "Services": {"svc": {}},
        "Peers": [{"IP": "10.0.0.2"}],
        "Options": {"com.docker.network.bridge.name": "docker0"},
    }
    shown = json.loads(network_view(json.dumps(inspect).encode(), {ours}))
    assert shown == {"Name": "bridge", "Containers": {ours: inspect["Containers"][ours]}, "Options": inspect["Options"]}
    listed = json.loads(network_view(json.dumps([inspect, {"Name": "none", "Containers": None}]).encode(), set()))
    assert [n.get("Containers") for n in listed] == [{}, None]
    with pytest.raises(Refused):
        network_view(b"not json", set())
