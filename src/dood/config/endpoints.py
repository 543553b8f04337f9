"""How a Docker daemon is reached, and the hosts of a deployment with several: the part of the config model
that placement (`dood.config.placement`) and the mount map (`dood.mounts.mount_map`) read.

Imports nothing of dood but the GPU inventory's model, so `placement` imports it without the whole config
(the config model calls placement while validating).
"""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dood.config.gpu_inventory import GpuInventory

__all__ = ["QUEUE_PATTERN", "DockerEndpoint", "Host", "HostEndpoint", "MountMapEntry"]

#: A Celery queue name, as `hosts.<name>.queue` may give it.
QUEUE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,199}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DockerEndpoint(_Strict):
    """How to reach the Docker daemon that runs the launched containers."""

    url: str = Field(
        default_factory=lambda: os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"),
        description="Docker API URL. Defaults to $DOCKER_HOST, else the mounted host socket.",
        examples=["unix:///var/run/docker.sock", "tcp://dood-proxy:2375"],
    )
    conn_id: str | None = Field(
        default=None,
        description="Airflow connection (type docker) used for registry login; none means no login.",
        examples=["docker_registry"],
    )
    api_version: str = Field(default="auto", description="Docker API version, or 'auto' to negotiate.")
    timeout_seconds: int = Field(default=120, gt=0, description="Timeout of single Docker API calls.")
    unreachable_timeout_seconds: int = Field(
        default=120,
        gt=0,
        description=(
            "How long a wait for a running container (blocking, deferred, sensor) tolerates a daemon that does "
            "not answer, as during a dockerd restart: it reconnects with backoff (0.5 s doubling up to 10 s), "
            'then fails with "Docker daemon unreachable since <time>". A restart with live-restore is then '
            "invisible to the task; without it, the container is reported killed by the daemon's shutdown."
        ),
        examples=[120, 600],
    )
    tls_ca_cert: str | None = Field(
        default=None, description="CA certificate for a TLS endpoint (alone: TLS that verifies the server only)."
    )
    tls_client_cert: str | None = Field(default=None, description="Client certificate for TLS (with its key).")
    tls_client_key: str | None = Field(default=None, description="Client key for TLS (with its certificate).")

    @model_validator(mode="after")
    def _client_pair(self) -> DockerEndpoint:
        if bool(self.tls_client_cert) != bool(self.tls_client_key):
            given, missing = (
                ("tls_client_cert", "tls_client_key") if self.tls_client_cert else ("tls_client_key", "tls_client_cert")
            )
            raise ValueError(f"{given} is given without {missing}: a client certificate needs its key (give both)")
        return self


class MountMapEntry(_Strict):
    """One directory that Airflow and the Docker host see under different paths."""

    airflow_path: str = Field(description="The path as the Airflow process sees it.", examples=["/opt/dood/data"])
    host_path: str = Field(description="The same directory's path on the Docker host.", examples=["/srv/ml/data"])

    @field_validator("airflow_path", "host_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must be an absolute path, got {value!r}")
        return os.path.normpath(value)


class HostEndpoint(DockerEndpoint):
    """A Docker host's dood-proxy, with the provider's connection settings (DockerHook: TLS, registry login)."""

    url: str = Field(
        description=(
            "The proxy's API URL: unix:// on the host itself, tcp:// with mutual TLS (all three tls_* files) "
            "when reached over a network."
        ),
        examples=["tcp://gpu-1.example.com:2376", "unix:///run/dood/proxy.sock", "tcp://dood-proxy:2375"],
    )

    @model_validator(mode="after")
    def _client_pair(self) -> HostEndpoint:  # replaces DockerEndpoint's: all three files or none
        given = [name for name in ("tls_ca_cert", "tls_client_cert", "tls_client_key") if getattr(self, name)]
        if given and len(given) < 3:
            raise ValueError(
                f"a proxy speaks mutual TLS only: give all of tls_ca_cert (the CA that signed the proxy's "
                f"certificate), tls_client_cert and tls_client_key, not just {', '.join(given)} "
                "(scripts/make-host-certs.sh makes them)"
            )
        if given and not self.url.startswith(("tcp://", "https://")):
            raise ValueError(f"TLS settings need a tcp:// url, got {self.url!r}")
        return self


class Host(_Strict):
    """One Docker host of a deployment with several (docs/hosts.md): its dood-proxy, the Celery queue its worker
    listens on, its labels, its GPUs and its mount map."""

    docker: HostEndpoint = Field(
        description=(
            "That host's dood-proxy as any process of the deployment reaches it (a triggerer on another host "
            "too): tcp:// with mutual TLS across machines."
        )
    )
    local_docker: HostEndpoint | None = Field(
        default=None,
        description=(
            "The same proxy as the processes on that host reach it ($DOOD_HOST is this host's name), e.g. "
            "tcp://dood-proxy:2375 on its compose network or a unix socket; none: `docker`."
        ),
    )
    ui_docker: HostEndpoint | None = Field(
        default=None,
        description=(
            "That host's read-only dood-proxy (`--read-only`, with --tls-listen across machines) as the api-server "
            "reaches it: the DooD page and the Container tab read the host through it, never with create rights. "
            "None: the page names the host as not readable from the UI."
        ),
        examples=[{"url": "tcp://gpu-1.example.com:2377"}],
    )
    queue: str | None = Field(
        default=None,
        pattern=QUEUE_PATTERN,
        description="Celery queue of this host's worker (`airflow celery worker --queues`). Default: dood-<name>.",
        examples=["gpu-box-1"],
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="What steps select hosts by (a step's host_labels), e.g. gpu: a100.",
        examples=[{"gpu": "a100", "zone": "lab-2"}],
    )
    pool_slots: int = Field(
        default=16,
        ge=1,
        description=(
            "Slots of this host's Airflow pool dood-<name>: at most this many placed steps (one container each, "
            "deferred ones included) run on the host at once. `python -m dood.hosts pools` writes the pools."
        ),
    )
    gpus: GpuInventory | None = Field(
        default=None, description="This host's GPUs (claims are per host); none: the top-level `gpus`."
    )
    mount_map: tuple[MountMapEntry, ...] | None = Field(
        default=None,
        description=(
            "This host's mount map (Airflow-side path -> path on this host): the same shared data may sit at "
            "another path on each host. None: the top-level `mount_map`."
        ),
    )
