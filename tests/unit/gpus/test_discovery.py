"""Discovery of a Docker host's GPUs: nvidia-smi's output read, and a failure that says how to do without."""

from __future__ import annotations

import docker
import pytest

from dood.config.model import parse_config
from dood.gpus.discovery import DiscoveryFailed, discover, inventory_of, parse_gpus, probe_body
from dood.gpus.holdings import is_probe, referee

TWO = "0, GPU-8f6c1a2b-0000-1111-2222-333344445555\n1, GPU-9a7d3c4e-6666-7777-8888-999900001111\n"


def test_nvidia_smi_lines_become_index_and_uuid():
    assert parse_gpus(TWO) == [
        ("0", "GPU-8f6c1a2b-0000-1111-2222-333344445555"),
        ("1", "GPU-9a7d3c4e-6666-7777-8888-999900001111"),
    ]
    assert parse_gpus("\n 3 ,GPU-x \n\n") == [("3", "GPU-x")]


@pytest.mark.parametrize(
    "output, message",
    [
        ("", "listed no GPU"),
        ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.", "not an 'index, uuid'"),
        ("0, GPU-a, extra", "not an 'index, uuid'"),
        ("GPU-a, 0", "not an 'index, uuid'"),
        ("0, GPU-a\n0, GPU-b", "one index twice"),
    ],
)
def test_anything_else_is_refused(output, message):
    with pytest.raises(ValueError, match=message):
        parse_gpus(output)


def test_the_probe_asks_for_every_gpu_and_runs_the_query():
    body = probe_body("nvidia/cuda:12.4.1-base-ubuntu22.04")
    requests = [{"Driver": "nvidia", "Count": -1, "Capabilities": [["gpu", "utility"]]}]
    assert body["HostConfig"]["DeviceRequests"] == requests
    assert body["Entrypoint"] == ["/usr/bin/nvidia-smi"]  # where the toolkit mounts the driver's own
    assert body["Cmd"] == ["--query-gpu=index,uuid", "--format=csv,noheader"]


def test_dood_proxy_lets_the_probe_through_and_no_other_count():
    trusted = ("nvidia/cuda:12.4.1-base-ubuntu22.04",)
    body = probe_body(trusted[0])
    assert is_probe(body, trusted) and referee(body, [], trusted) == []
    assert referee(body, []) != []  # no trusted probe image: no probe passes
    changes = (
        {"Entrypoint": ["/bin/sh"]},
        {"Cmd": ["-c", "train.py"]},
        {"Entrypoint": None},
        {"Image": "attacker/any:latest"},  # its own libc would run with every GPU
        {"Env": ["LD_PRELOAD=/data/evil.so"]},
        {"HostConfig": {**body["HostConfig"], "Binds": ["/srv/data:/data"]}},
        {"HostConfig": {**body["HostConfig"], "Mounts": [{"Type": "bind", "Source": "/srv", "Target": "/x"}]}},
    )
    for changed in changes:
        assert referee({**body, **changed}, [], trusted) != [], changed
    without_utility = {**body, "HostConfig": {"DeviceRequests": [{"Count": -1, "Capabilities": [["gpu"]]}]}}
    assert referee(without_utility, [], trusted) != []


def test_the_config_wins_and_no_probe_runs():
    config = parse_config({"gpus": {"devices": ["0", "1"]}})
    unreachable = docker.APIClient(base_url="unix:///nonexistent/docker.sock", version="1.41")
    inventory, found = inventory_of(unreachable, "unix:///nonexistent/docker.sock", config.gpus)
    assert inventory.devices == ("0", "1") and found.source == "config"


def test_a_failed_discovery_names_gpus_devices_as_the_fix():
    url = "unix:///nonexistent/docker.sock"
    unreachable = docker.APIClient(base_url=url, version="1.41", timeout=2)
    with pytest.raises(DiscoveryFailed) as caught:
        discover(unreachable, url, image="nvidia/cuda:12.4.1-base-ubuntu22.04", timeout=2)
    message = str(caught.value)
    assert f"GPU discovery on {url} failed" in message
    assert "gpus.devices: ['0', '1', ...]" in message and "nvidia-smi -L" in message
    assert "gpus.probe_image (nvidia/cuda:12.4.1-base-ubuntu22.04)" in message


def test_the_default_probe_image_is_nvidias_cuda_base():
    assert parse_config({}).gpus.probe_image.startswith("nvidia/cuda:")
