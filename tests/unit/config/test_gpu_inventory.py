"""The GPU inventory: the config model (`gpus.devices`)."""

from __future__ import annotations

import pytest

from dood.config.gpu_inventory import GpuInventory
from dood.config.model import parse_config
from dood.exceptions import DoodConfigError

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
