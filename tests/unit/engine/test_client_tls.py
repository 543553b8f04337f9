"""One client TLS rule for every dood process (dood.engine.client_tls, dood.engine.target): the hook, the
teardown's target and the triggers' aiohttp session agree on which endpoints speak TLS and with what."""

from __future__ import annotations

import pytest
from docker.tls import TLSConfig
from pydantic import ValidationError

from dood.config.endpoints import DockerEndpoint
from dood.config.model import parse_config
from dood.engine.client_tls import EndpointTLS, tls_config
from dood.engine.target import DockerTarget
from dood.hooks.async_docker import tls_files
from dood.hooks.dood import DoodHook

CA = "/etc/ssl/certs/ca-certificates.crt"  # any readable file: nothing connects


def hook_tls(ca: str | None, cert: str | None, key: str | None) -> EndpointTLS | bool:
    docker = {"url": "tcp://docker.example:2376", "tls_ca_cert": ca, "tls_client_cert": cert, "tls_client_key": key}
    hook = DoodHook(parse_config({"docker": {k: v for k, v in docker.items() if v}}))
    return hook._DockerHook__tls  # type: ignore[attr-defined]  # what the provider hands the SDK's client


@pytest.mark.parametrize(
    ("ca", "cert", "key"), [(None, None, None), (CA, None, None), (CA, CA, CA), (None, CA, CA)], ids=str
)
def test_the_hook_the_target_and_the_async_session_agree_on_tls(ca, cert, key):
    made = [hook_tls(ca, cert, key), tls_config(ca, cert, key)]
    is_tls = [isinstance(tls, TLSConfig) for tls in made] + [tls_files(ca, cert, key) is not None]
    assert is_tls == [bool(ca or cert)] * 3
    for tls in made:
        if isinstance(tls, TLSConfig):
            assert isinstance(tls, EndpointTLS)  # $REQUESTS_CA_BUNDLE cannot replace the endpoint's CA
            assert tls.verify == (ca or True)
            assert tls.cert == ((cert, key) if cert else None)


def test_a_ca_alone_is_tls_that_verifies_the_server_and_the_url_becomes_https():
    """Before: the hook (DockerHook.construct_tls_config) gave TLS only with all three files, so a CA alone
    spoke plain HTTP to a TLS port while the teardown spoke TLS."""
    assert hook_tls(CA, None, None) is not False
    assert DockerTarget("tcp://127.0.0.1:2376", "1.41", CA).client().base_url == "https://127.0.0.1:2376"
    assert DockerTarget("tcp://127.0.0.1:2375", "1.41").client().base_url == "http://127.0.0.1:2375"


@pytest.mark.parametrize("given", ["tls_client_cert", "tls_client_key"])
def test_a_client_certificate_without_its_key_or_a_key_alone_is_refused_naming_both(given):
    with pytest.raises(ValidationError, match="needs its key"):
        DockerEndpoint(url="tcp://docker.example:2376", **{given: CA})
