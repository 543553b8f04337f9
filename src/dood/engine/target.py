"""`DockerTarget`: a Docker endpoint as plain strings, so it crosses process and serialisation boundaries (the
teardown's command line, a trigger's kwargs as one plain dict, the UI's per-host readers) and gives the same
client everywhere."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from docker import APIClient

from dood.engine.client_tls import tls_config

if TYPE_CHECKING:
    from dood.config.endpoints import DockerEndpoint

#: How the previous release's triggers serialized the endpoint (five flat kwargs): their key -> the field here.
FLAT_KWARGS = {
    "docker_url": "url",
    "api_version": "api_version",
    "tls_ca_cert": "tls_ca_cert",
    "tls_client_cert": "tls_client_cert",
    "tls_client_key": "tls_client_key",
}


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

    def as_dict(self) -> dict[str, str | None]:
        """Plain JSON types, for a trigger's kwargs (Airflow stores them as JSON); `from_dict` reads it back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, field: str = "target") -> DockerTarget:
        """The target `as_dict` gave. Keys are allow-listed; a bad one raises ValueError naming `field`."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{field}: a mapping of {_names()} is required, got {type(data).__name__}")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"{field}: unknown key(s) {', '.join(map(repr, unknown))}; the keys are {_names()}")
        url, api_version = data.get("url"), data.get("api_version", "auto")
        if not isinstance(url, str) or not url:
            raise ValueError(f"{field}.url: the Docker API URL (unix://, tcp://, http(s)://) is required, got {url!r}")
        if not isinstance(api_version, str) or not api_version:
            raise ValueError(f"{field}.api_version: 'auto' or a version such as '1.41', got {api_version!r}")
        tls: list[str | None] = []
        for name in ("tls_ca_cert", "tls_client_cert", "tls_client_key"):
            value = data.get(name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{field}.{name}: a file path or null, got {value!r}")
            tls.append(value or None)
        return cls(url, api_version, *tls)

    @classmethod
    def given(
        cls,
        target: DockerTarget | Mapping[str, Any] | None,
        flat: Mapping[str, Any],
        *,
        who: str,
        default_url: str | None = None,
    ) -> DockerTarget:
        """A trigger's `target`: as given (a DockerTarget, or its dict from the triggerer's database), or built
        from the previous release's flat kwargs (`FLAT_KWARGS`: a trigger row written before the upgrade), or
        `default_url` alone. Any other keyword is refused as Python would; both forms at once are refused."""
        unknown = sorted(set(flat) - set(FLAT_KWARGS))
        if unknown:
            raise TypeError(f"{who}() got unexpected keyword argument(s): {', '.join(unknown)}")
        if target is not None and flat:
            raise ValueError(
                f"{who}: give target=DockerTarget(...) or the previous release's {', '.join(sorted(flat))}, not both"
            )
        if isinstance(target, DockerTarget):
            return target
        if target is not None:
            return cls.from_dict(target)
        if flat.get("docker_url") is None and default_url is None:
            raise ValueError(f"{who}: target is required (DockerTarget.of(config.docker))")
        given = {FLAT_KWARGS[key]: value for key, value in flat.items() if value is not None}
        return cls.from_dict({"url": default_url, **given})

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


def _names() -> str:
    return ", ".join(f.name for f in fields(DockerTarget))
