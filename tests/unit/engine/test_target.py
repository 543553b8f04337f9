"""dood.engine.target: a Docker endpoint as one plain value, through a trigger's JSON kwargs and back; the
previous release's flat kwargs mapped onto it."""

from __future__ import annotations

import json

import pytest

from dood.config.model import parse_config
from dood.engine.target import FLAT_KWARGS, DockerTarget

TLS = DockerTarget("tcp://gpu-b:2376", "1.41", "/certs/ca.pem", "/certs/cert.pem", "/certs/key.pem")


def test_as_dict_is_plain_json_and_from_dict_reads_it_back():
    data = TLS.as_dict()
    assert data == {
        "url": "tcp://gpu-b:2376",
        "api_version": "1.41",
        "tls_ca_cert": "/certs/ca.pem",
        "tls_client_cert": "/certs/cert.pem",
        "tls_client_key": "/certs/key.pem",
    }
    assert DockerTarget.from_dict(json.loads(json.dumps(data))) == TLS
    assert DockerTarget.from_dict({"url": "unix:///var/run/docker.sock"}) == DockerTarget("unix:///var/run/docker.sock")


def test_of_a_config_endpoint_keeps_every_field():
    docker = parse_config({"docker": {"url": "tcp://gpu-b:2376", "api_version": "1.41", **_tls()}}).docker
    assert DockerTarget.of(docker) == TLS


def _tls() -> dict[str, str]:
    return {"tls_ca_cert": "/certs/ca.pem", "tls_client_cert": "/certs/cert.pem", "tls_client_key": "/certs/key.pem"}


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"url": "tcp://a:2375", "docker_url": "tcp://a:2375"}, r"target: unknown key\(s\) 'docker_url'; the keys"),
        ({}, "target.url: the Docker API URL"),
        ({"url": ""}, "target.url"),
        ({"url": "tcp://a:2375", "api_version": 1.41}, "target.api_version"),
        ({"url": "tcp://a:2375", "tls_client_key": ["/k.pem"]}, "target.tls_client_key: a file path or null"),
        (["tcp://a:2375"], "target: a mapping of url, api_version"),
    ],
)
def test_a_bad_dict_names_the_field(data, fragment):
    with pytest.raises(ValueError, match=fragment):
        DockerTarget.from_dict(data)


def test_given_takes_a_target_its_dict_or_the_previous_release_s_flat_kwargs():
    assert DockerTarget.given(TLS, {}, who="T") is TLS
    assert DockerTarget.given(TLS.as_dict(), {}, who="T") == TLS
    flat = {flat_key: getattr(TLS, name) for flat_key, name in FLAT_KWARGS.items()}
    assert set(flat) == {"docker_url", "api_version", "tls_ca_cert", "tls_client_cert", "tls_client_key"}
    assert DockerTarget.given(None, flat, who="T") == TLS
    assert DockerTarget.given(None, {"docker_url": "tcp://a:2375", "tls_ca_cert": None}, who="T") == DockerTarget(
        "tcp://a:2375"
    )
    assert DockerTarget.given(None, {}, who="T", default_url="unix:///s.sock") == DockerTarget("unix:///s.sock")


def test_given_refuses_both_forms_unknown_keywords_and_no_endpoint():
    with pytest.raises(
        ValueError, match="T: give target=DockerTarget.* or the previous release's docker_url, not both"
    ):
        DockerTarget.given(TLS, {"docker_url": "tcp://b:2375"}, who="T")
    with pytest.raises(TypeError, match="T\\(\\) got unexpected keyword argument\\(s\\): url"):
        DockerTarget.given(None, {"url": "tcp://b:2375"}, who="T")
    with pytest.raises(ValueError, match=r"T: target is required \(DockerTarget.of\(config.docker\)\)"):
        DockerTarget.given(None, {}, who="T")
