"""The policy's GPU rules that keep GPU claims checkable: one request names GPUs or counts them, never both,
and a container asking for GPUs takes no restart policy (the daemon would restart it past dood-proxy)."""

from __future__ import annotations

import pytest

from dood.policy import Policy, violations

GPUS = Policy(allow_gpus=True, max_gpus=2)


def _sent(request: dict | None = None, restart: dict | None = None) -> dict:
    host: dict = {}
    if request is not None:
        host["DeviceRequests"] = [{"Driver": "nvidia", "Capabilities": [["gpu"]], **request}]
    if restart is not None:
        host["RestartPolicy"] = restart
    return {"Image": "dood-test-busybox:1", "User": "50000:0", "HostConfig": host}


def _found(sent: dict, policy: Policy = GPUS) -> list[tuple[str, str, str]]:
    return [(v.field, v.rule, v.message) for v in violations(sent, policy)]


@pytest.mark.parametrize("count", [1, -1, 2, True])
def test_count_with_device_ids_is_refused(count):
    found = _found(_sent({"DeviceIDs": ["2"], "Count": count}))
    assert [(field, rule) for field, rule, _ in found] == [("HostConfig.DeviceRequests[0].Count", "gpu")]
    assert "together with DeviceIDs" in found[0][2] and "DeviceIDs alone" in found[0][2]


@pytest.mark.parametrize("request_", [{"DeviceIDs": ["2"], "Count": 0}, {"DeviceIDs": ["2"]}, {"Count": 1}])
def test_device_ids_alone_or_count_alone_pass(request_):
    assert _found(_sent(request_)) == []  # Count alone: the proxy's GPU referee refuses it, not the policy


@pytest.mark.parametrize("name", ["always", "unless-stopped", "on-failure", "bogus"])
def test_a_gpu_container_takes_no_restart_policy(name):
    found = _found(_sent({"DeviceIDs": ["0"]}, {"Name": name, "MaximumRetryCount": 0}))
    assert [(field, rule) for field, rule, _ in found] == [("HostConfig.RestartPolicy.Name", "gpu")]
    assert repr(name) in found[0][2] and "without dood-proxy checking" in found[0][2]


@pytest.mark.parametrize("restart", [None, {}, {"Name": ""}, {"Name": "no", "MaximumRetryCount": 0}])
def test_no_restart_policy_passes_with_gpus(restart):
    assert _found(_sent({"DeviceIDs": ["0"]}, restart)) == []


def test_restart_policies_of_containers_without_gpus_are_not_this_rules():
    assert [f for f in _found(_sent(None, {"Name": "always"})) if f[0].startswith("HostConfig.RestartPolicy")] == []


def test_case_variants_of_the_restart_policy_are_read_as_the_daemon_reads_them():
    sent = _sent({"DeviceIDs": ["0"]})
    sent["HostConfig"]["restartpolicy"] = {"name": "always"}
    assert ("HostConfig.RestartPolicy.Name", "gpu") in [(field, rule) for field, rule, _ in _found(sent)]
