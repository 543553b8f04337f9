from __future__ import annotations

import pytest
from pydantic import ValidationError

from dood.config.resources import Resources


def test_host_config_kwargs():
    kwargs = Resources(cpus=1.5, memory="512m", shm_size="1g", gpus=2).host_config_kwargs()
    assert kwargs["nano_cpus"] == 1_500_000_000
    assert kwargs["mem_limit"] == 512 * 1024**2
    assert kwargs["shm_size"] == 1024**3
    assert kwargs["device_requests"][0]["Count"] == 2


@pytest.mark.parametrize("gpus", [1, 3, "all"])
def test_gpu_requests_are_what_the_docker_sdk_would_build(gpus):
    import docker
    from docker.types import DeviceRequest

    count = -1 if gpus == "all" else gpus
    ours = Resources(gpus=gpus).host_config_kwargs()["device_requests"]
    assert ours == [DeviceRequest(count=count, capabilities=[["gpu"]])]
    api = docker.APIClient(version="1.41")  # no connection is made with an explicit version
    assert api.create_host_config(device_requests=ours) == api.create_host_config(
        device_requests=[DeviceRequest(count=count, capabilities=[["gpu"]])]
    )


def test_all_gpus_and_none():
    assert Resources(gpus="all").host_config_kwargs()["device_requests"][0]["Count"] == -1
    assert Resources().host_config_kwargs() == {}


def test_unset_fields_fall_back_to_defaults():
    merged = Resources(cpus=2).merged_over(Resources(memory="1g", cpus=1))
    assert merged.cpus == 2 and merged.memory == 1024**3


@pytest.mark.parametrize("bad", [{"cpus": 0}, {"memory": "lots"}, {"gpus": -1}, {"gpus": "some"}, {"disk": 1}])
def test_bad_values_are_refused(bad):
    with pytest.raises(ValidationError):
        Resources(**bad)


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ({"cpus": True}, "not a boolean"),
        ({"gpus": True}, "not a boolean"),
        ({"memory": True}, "not a boolean"),
        ({"memory": "1k"}, "Docker's minimum of 6m"),
        ({"cpus": 0.001}, "greater than or equal to 0.01"),
    ],
)
def test_values_docker_would_refuse_at_create_are_refused_at_config_time(bad, says):
    with pytest.raises(ValidationError, match=says):
        Resources(**bad)


def test_docker_minimums_themselves_are_accepted():
    assert Resources(memory="6m", cpus=0.01).memory == 6 * 1024**2


def test_more_cpus_than_the_host_has_is_refused_naming_the_field():
    from dood.exceptions import DoodConfigError

    Resources(cpus=2).check_host(2)
    Resources(cpus=1000).check_host(None)  # host unknown: nothing to check against
    with pytest.raises(DoodConfigError, match=r"train: resources\.cpus: 1000 is more than the 2 CPUs"):
        Resources(cpus=1000).check_host(2, "train: resources")
