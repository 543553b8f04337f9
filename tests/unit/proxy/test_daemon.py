"""dood-proxy's upstream daemon (dood.proxy.daemon): endpoints it listens on or forwards to."""

from __future__ import annotations

import pytest

from dood.proxy.daemon import Endpoint


def test_endpoints():
    assert str(Endpoint.parse("unix:///run/dood/docker.sock")) == "unix:///run/dood/docker.sock"
    assert Endpoint.parse("tcp://127.0.0.1:2375").port == 2375
    for bad in ("unix://relative.sock", "tcp://host", "http://h:1/path", "ssh://x"):
        with pytest.raises(ValueError):
            Endpoint.parse(bad)
