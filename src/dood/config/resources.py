"""Resource limits of a launched container, validated once and turned into Docker's host config."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dood.exceptions import DoodConfigError
from dood.policy.sizes import parse_size

__all__ = ["MIN_CPUS", "MIN_MEMORY_BYTES", "Resources", "parse_size"]

MIN_MEMORY_BYTES = 6 * 1024 * 1024  # Docker refuses less: "Minimum memory limit allowed is 6MB"
MIN_CPUS = 0.01  # Docker's smallest CPU limit (NanoCPUs 10^7)


class Resources(BaseModel):
    """CPU, memory, shared memory and GPUs for one container. Unset means Docker's default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpus: float | None = Field(
        default=None,
        ge=MIN_CPUS,
        description="Hard CPU limit in cores (Docker nano_cpus); at least 0.01, at most the host's CPU count.",
        examples=[2, 0.5],
    )
    memory: int | None = Field(default=None, description="Memory limit: bytes or '4g'; at least 6m.", examples=["4g"])
    shm_size: int | None = Field(default=None, description="Size of /dev/shm: bytes or '1g'.", examples=["1g"])
    gpus: int | Literal["all"] = Field(
        default=0, description="GPUs requested through the nvidia driver: a count or 'all'.", examples=[1, "all"]
    )

    @field_validator("memory", "shm_size", mode="before")
    @classmethod
    def _sizes(cls, value: int | str | None) -> int | None:
        return parse_size(value)

    @field_validator("memory")
    @classmethod
    def _docker_minimum(cls, value: int | None) -> int | None:
        if value is not None and value < MIN_MEMORY_BYTES:
            raise ValueError(f"{value} bytes is less than Docker's minimum of 6m ({MIN_MEMORY_BYTES} bytes)")
        return value

    @field_validator("cpus", "gpus", mode="before")
    @classmethod
    def _no_booleans(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError(f"must be a number, not a boolean (got {value}); e.g. 2 or 0.5")
        return value

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 0:
            raise ValueError("must be 0 or more, or 'all'")
        return value

    def check_host(self, host_cpus: int | None, field: str = "resources") -> None:
        """Refuse limits this Docker host cannot grant (known only once the host is: call before create)."""
        if self.cpus is not None and host_cpus and self.cpus > host_cpus:
            raise DoodConfigError(
                f"{field}.cpus: {self.cpus:g} is more than the {host_cpus} CPUs of the Docker host; "
                f"ask for at most {host_cpus}."
            )

    def merged_over(self, base: Resources) -> Resources:
        """These resources with unset fields taken from `base` (the config defaults)."""
        return base.model_copy(update=self.model_dump(exclude_unset=True))

    def host_config_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `APIClient.create_host_config`."""
        kwargs: dict[str, Any] = {}
        if self.cpus is not None:
            kwargs["nano_cpus"] = int(self.cpus * 1e9)
        if self.memory is not None:
            kwargs["mem_limit"] = self.memory
        if self.shm_size is not None:
            kwargs["shm_size"] = self.shm_size
        if self.gpus:
            count = -1 if self.gpus == "all" else self.gpus
            # docker.types.DeviceRequest's own form (create_host_config takes it as is), without the docker SDK
            kwargs["device_requests"] = [
                {"Driver": "", "Count": count, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}}
            ]
        return kwargs
