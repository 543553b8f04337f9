"""Resource limits of a launched container, validated once and turned into Docker's host config."""

from __future__ import annotations

from typing import Any, Literal

from docker.errors import DockerException
from docker.types import DeviceRequest
from docker.utils import parse_bytes
from pydantic import BaseModel, ConfigDict, Field, field_validator


def parse_size(value: int | str | None) -> int | None:
    """Bytes from an int or a size such as '512m' / '4g' (Docker's own parser); a ValueError names the fix."""
    if value is None:
        return None
    try:
        parsed = parse_bytes(value)
    except DockerException as exc:
        raise ValueError(f"{exc}; use bytes or a size such as '512m' or '4g'") from None
    if parsed <= 0:
        raise ValueError("must be a positive size such as '512m' or '4g'")
    return parsed


class Resources(BaseModel):
    """CPU, memory, shared memory and GPUs for one container. Unset means Docker's default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpus: float | None = Field(
        default=None, gt=0, description="Hard CPU limit in cores (Docker nano_cpus).", examples=[2, 0.5]
    )
    memory: int | None = Field(default=None, description="Memory limit: bytes or '4g'.", examples=["4g"])
    shm_size: int | None = Field(default=None, description="Size of /dev/shm: bytes or '1g'.", examples=["1g"])
    gpus: int | Literal["all"] = Field(
        default=0, description="GPUs requested through the nvidia driver: a count or 'all'.", examples=[1, "all"]
    )

    @field_validator("memory", "shm_size", mode="before")
    @classmethod
    def _sizes(cls, value: int | str | None) -> int | None:
        return parse_size(value)

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 0:
            raise ValueError("must be 0 or more, or 'all'")
        return value

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
            kwargs["device_requests"] = [DeviceRequest(count=count, capabilities=[["gpu"]])]
        return kwargs
