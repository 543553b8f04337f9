"""Session fixture: the second Docker engine with the fake NVIDIA hook (`second_engine.SecondEngine`).

Imported by `conftest.py`, so any integration test can ask for `gpu_engine`.
"""

from __future__ import annotations

import os

import pytest

from tests.integration.second_engine import SecondEngine

GPU_TEST_IMAGE = "dood-test-busybox:latest"


@pytest.fixture(scope="session")
def gpu_engine(docker_api):
    """A second dockerd with a fake GPU driver and the busybox test image; torn down after the session."""
    if os.geteuid() != 0:
        pytest.skip("GPU tests start a second dockerd (own bridge, data root, socket): that needs root")
    engine = SecondEngine.for_session()
    engine.start()
    try:
        engine.load_image(GPU_TEST_IMAGE)
        yield engine
    finally:
        engine.stop()
