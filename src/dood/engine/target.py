"""`DockerTarget`: a Docker endpoint as plain strings, so it crosses process and serialisation boundaries (the
teardown's command line, a trigger's kwargs, the UI's per-host readers) and gives the same client everywhere."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from docker import APIClient

from dood.engine.client_tls import tls_config

if TYPE_CHECKING:
    from dood.config.endpoints import DockerEndpoint


@dataclass(frozen=True)
class DockerTarget:
    """The Docker endpoint, as plain strings a command line can carry."""

    url: str
    api_version: str = "auto"
    tls_ca_cert: str | None = None
    tls_client_cert: str | None = None
    tls_client_key: str | None = None

    @classmethod
    def of(cls, endpoint: DockerEndpoint) -> DockerTarget:
        return cls(
            endpoint.url,
            endpoint.api_version,
            endpoint.tls_ca_cert,
            endpoint.tls_client_cert,
            endpoint.tls_client_key,
        )

    def arguments(self) -> list[str]:
        args = ["--docker-url", self.url, "--api-version", self.api_version]
        for flag, value in (
            ("--tls-ca-cert", self.tls_ca_cert),
            ("--tls-client-cert", self.tls_client_cert),
            ("--tls-client-key", self.tls_client_key),
        ):
            if value:
                args += [flag, value]
        return args

    def client(self, timeout_seconds: int = 60) -> APIClient:
        tls = tls_config(self.tls_ca_cert, self.tls_client_cert, self.tls_client_key)
        return APIClient(base_url=self.url, version=self.api_version, tls=tls, timeout=timeout_seconds)
