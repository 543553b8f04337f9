"""Client TLS to a Docker endpoint (another host's dood-proxy, docs/hosts.md): the provider's settings, kept.

`DockerHook.construct_tls_config` makes the docker SDK's `TLSConfig`, which sets the session's `verify` to
the endpoint's CA. But the SDK's client is a `requests` session, and requests lets `$REQUESTS_CA_BUNDLE` (set
on many machines, this one included) replace a session's `verify` on every request: the proxy's
certificate, signed by the deployment's own CA, would then be checked against the system's public CAs and
refused. `EndpointTLS` is the same TLSConfig, with the session told not to take settings from the
environment (`trust_env = False`: no CA bundle, no HTTP proxy, no .netrc), so the endpoint's CA is the one.
"""

from __future__ import annotations

from docker.tls import TLSConfig


class EndpointTLS(TLSConfig):
    """A `TLSConfig` whose CA and client certificate no environment variable overrides."""

    @classmethod
    def of(cls, tls: TLSConfig | bool) -> EndpointTLS | bool:
        if not isinstance(tls, TLSConfig):
            return tls
        pinned = cls.__new__(cls)
        pinned.__dict__.update(tls.__dict__)
        return pinned

    def configure_client(self, client) -> None:
        super().configure_client(client)
        client.trust_env = False


def tls_config(ca_cert: str | None, client_cert: str | None, client_key: str | None) -> EndpointTLS | bool:
    """The client TLS of an endpoint, built one way for every dood process (the hook, the teardown, the UI; the
    triggers' aiohttp session follows the same rule in `dood.hooks.async_docker.tls_files`): TLS as soon as a
    CA or a client certificate is given (a CA alone: the server is verified, no client certificate), else
    plain (False). `DockerHook.construct_tls_config` gives TLS only when all three files are given, so a CA
    alone would silently speak plain HTTP to a TLS port."""
    if not (ca_cert or client_cert):
        return False
    cert = (client_cert, client_key or "") if client_cert else None
    return EndpointTLS.of(TLSConfig(ca_cert=ca_cert, client_cert=cert, verify=ca_cert or True))
