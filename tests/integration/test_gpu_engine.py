"""The second engine itself: GPU requests accepted, the fake hook's record, the main engine untouched."""

from __future__ import annotations

import subprocess

from docker.types import DeviceRequest

from tests.integration.gpu_fixtures import GPU_TEST_IMAGE


def _run(api, request: DeviceRequest) -> str:
    host_config = api.create_host_config(device_requests=[request])
    container = api.create_container(GPU_TEST_IMAGE, ["true"], host_config=host_config)["Id"]
    try:
        api.start(container)
        assert api.wait(container)["StatusCode"] == 0
    finally:
        api.remove_container(container, force=True)
    return container


def test_the_engine_runs_gpu_requests_and_the_hook_records_what_it_gave(gpu_engine):
    api = gpu_engine.api()
    by_count = _run(api, DeviceRequest(count=1, capabilities=[["gpu"]]))
    by_ids = _run(api, DeviceRequest(device_ids=["2", "3"], capabilities=[["gpu"]]))
    assert gpu_engine.gpus_given(by_count) == ("0",)  # Docker's Count: N is always GPUs 0..N-1: the trap
    assert gpu_engine.gpus_given(by_ids) == ("2", "3")


def test_the_main_engine_keeps_its_default_bridge(gpu_engine, docker_api):
    assert subprocess.run(["ip", "link", "show", "docker0"], capture_output=True).returncode == 0
    assert docker_api.ping()
