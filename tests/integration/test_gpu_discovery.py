"""GPU inventory discovered through the engine (no `gpus.devices`), on the second engine with the fake NVIDIA hook.

The probe image is built here from the busybox test image with a fake `nvidia-smi`: a shell script that prints
four GPUs only when the engine gave the container every GPU (`NVIDIA_VISIBLE_DEVICES=all`) and it was asked
the discovery query, and fails otherwise.
"""

from __future__ import annotations

import io
import json
import tarfile
import threading
import uuid

import docker
import pytest

from dood.config.model import parse_config
from dood.gpus.claims import GpuClaims
from dood.gpus.cli import main as dood_gpus
from dood.gpus.discovery import _FOUND, PROBE_NAME, DiscoveryFailed, discover, probe_body
from tests.integration.gpu_fixtures import GPU_TEST_IMAGE
from tests.integration.proxy_process import running_proxy

PROBE_IMAGE = "dood-test-nvidia-smi:latest"
FAKE_NVIDIA_SMI = """#!/bin/sh
[ "$NVIDIA_VISIBLE_DEVICES" = all ] || { echo "not given every GPU: '$NVIDIA_VISIBLE_DEVICES'" >&2; exit 9; }
[ "$*" = "--query-gpu=index,uuid --format=csv,noheader" ] || { echo "unexpected arguments: $*" >&2; exit 8; }
for i in 0 1 2 3; do echo "$i, GPU-fake-0000-000$i"; done
"""
DOCKERFILE = f"FROM {GPU_TEST_IMAGE}\nCOPY nvidia-smi /usr/bin/nvidia-smi\n"


def _context() -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text, mode in (("Dockerfile", DOCKERFILE, 0o644), ("nvidia-smi", FAKE_NVIDIA_SMI, 0o755)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


@pytest.fixture(scope="module")
def probe_image(gpu_engine):
    """The busybox test image plus a fake nvidia-smi, built on the GPU engine itself (no registry)."""
    api = gpu_engine.api(timeout=120)
    for line in api.build(fileobj=_context(), custom_context=True, tag=PROBE_IMAGE, rm=True, decode=True):
        assert "error" not in line, line
    return PROBE_IMAGE


@pytest.fixture
def engine(gpu_engine, probe_image):
    """The GPU engine with no container left from an earlier test, and this process's cache forgotten."""

    def clean():
        _FOUND.clear()
        api = gpu_engine.api()
        for container in api.containers(all=True):
            api.remove_container(container["Id"], force=True)

    clean()
    yield gpu_engine
    clean()


def _config(url: str, image: str = PROBE_IMAGE):
    return parse_config({"docker": {"url": url}, "gpus": {"probe_image": image, "wait_recheck_seconds": 5}})


def _probe(api) -> dict:
    return api.inspect_container(PROBE_NAME)


def test_the_probe_is_given_every_gpu_and_its_output_is_the_inventory(engine):
    api = engine.api()
    found = discover(api, engine.url, image=PROBE_IMAGE)
    assert found.devices == ("0", "1", "2", "3") and found.source == "probe"
    assert found.uuids == tuple(f"GPU-fake-0000-000{i}" for i in range(4))
    probe = _probe(api)
    assert engine.gpus_given(probe["Id"]) == ("all",)  # the hook's record: Count -1, every GPU
    assert probe["State"]["Status"] == "exited" and probe["State"]["ExitCode"] == 0  # kept: the engine's record


def test_another_process_reads_the_engines_record_and_runs_no_second_probe(engine):
    api = engine.api()
    first = discover(api, engine.url, image=PROBE_IMAGE)
    probe = _probe(api)
    _FOUND.clear()  # as a new process would start
    again = discover(docker.APIClient(base_url=engine.url, version="auto"), engine.url, image=PROBE_IMAGE)
    assert again == first
    assert _probe(api)["Id"] == probe["Id"] and _probe(api)["State"]["StartedAt"] == probe["State"]["StartedAt"]
    rediscovered = discover(api, engine.url, image=PROBE_IMAGE, again=True)
    assert rediscovered.devices == first.devices and _probe(api)["Id"] != probe["Id"]


def test_many_processes_asking_at_once_run_one_probe(engine):
    results, errors = [], []

    def ask():
        try:
            client = docker.APIClient(base_url=engine.url, version="auto", timeout=60)
            results.append(discover(client, engine.url, image=PROBE_IMAGE).devices)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and results == [("0", "1", "2", "3")] * 4
    probes = engine.api().containers(all=True, filters={"label": ["dood.gpu_probe"]})
    assert len(probes) == 1, probes


def test_claims_use_the_discovered_inventory(engine):
    api = engine.api()
    claims = GpuClaims.of(api, _config(engine.url), image=GPU_TEST_IMAGE, user="1000:1000")
    given = []
    for _ in range(2):
        body = {
            "Image": GPU_TEST_IMAGE,
            "Cmd": ["sleep", "30"],
            "User": "1000:1000",
            "Labels": {"dood.dag_id": "dood_it_gpu_discovery", "dood.task_id": f"t{uuid.uuid4().hex[:6]}"},
            "HostConfig": {"DeviceRequests": [{"Driver": "", "Count": 1, "Capabilities": [["gpu"]]}]},
        }
        container_id = claims.create(body, lambda claimed: api.create_container_from_config(claimed)["Id"])
        api.start(container_id)
        given.append(engine.gpus_given(container_id))
    assert given == [("0",), ("1",)]
    assert claims.inventory.devices == ("0", "1", "2", "3")


def test_dood_gpus_says_where_the_inventory_came_from(engine, tmp_path, capsys):
    config = tmp_path / "dood.yaml"
    config.write_text(f"docker:\n  url: {engine.url}\ngpus:\n  probe_image: {PROBE_IMAGE}\n")
    assert dood_gpus(["--config", str(config)]) == 0
    shown = capsys.readouterr().out
    assert "4 discovered, 4 free, 0 held" in shown, shown
    assert f"inventory: discovered through the engine (container {PROBE_NAME}, image {PROBE_IMAGE}" in shown
    assert dood_gpus(["--config", str(config), "--json", "--rediscover"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["inventory"]["source"] == "probe" and len(printed["inventory"]["uuids"]) == 4
    listed = tmp_path / "listed.yaml"
    listed.write_text(f"docker:\n  url: {engine.url}\ngpus:\n  devices: ['0', '1']\n  probe_image: {PROBE_IMAGE}\n")
    assert dood_gpus(["--config", str(listed)]) == 0
    assert "inventory: listed in gpus.devices (the dood config)" in capsys.readouterr().out


def test_a_probe_image_without_nvidia_smi_fails_naming_gpus_devices(engine):
    api = engine.api()
    with pytest.raises(DiscoveryFailed, match=r"gpus\.devices: \['0', '1', \.\.\.\]") as caught:
        discover(api, engine.url, image=GPU_TEST_IMAGE)
    assert f"gpus.probe_image ({GPU_TEST_IMAGE})" in str(caught.value)
    assert api.containers(all=True, filters={"name": PROBE_NAME}) == []  # a failed probe is no record


def test_discovery_through_dood_proxy_passes_its_gpu_referee(engine, tmp_path):
    """The proxy refuses every other GPU Count; the probe's exact body (the driver's nvidia-smi) it lets by."""
    policy = (
        "  allowed_images: ['dood-test-busybox:*', 'dood-test-nvidia-smi:*']\n  allow_gpus: true\n"
        f"  gpu_probe_images: ['{PROBE_IMAGE}']\n"
        "  allowed_users: ['1000:1000', '65534:65534']\n"
    )
    with running_proxy(tmp_path, policy, "--upstream", engine.url) as proxy:
        api = docker.APIClient(base_url=proxy.url, version="auto", timeout=60)
        found = discover(api, proxy.url, image=PROBE_IMAGE)
        assert found.devices == ("0", "1", "2", "3")
        body = {"Image": PROBE_IMAGE, "Cmd": ["sleep", "1"], "User": "1000:1000"}
        body["HostConfig"] = {"DeviceRequests": [{"Driver": "nvidia", "Count": -1, "Capabilities": [["gpu"]]}]}
        with pytest.raises(docker.errors.APIError, match="Count without DeviceIDs"):
            api.create_container_from_config(body)
        untrusted = probe_body(GPU_TEST_IMAGE)  # the probe's body with an image the policy does not list
        with pytest.raises(docker.errors.APIError, match=r"not in policy\.gpu_probe_images|image of policy\.gpu_probe"):
            api.create_container_from_config(untrusted)
