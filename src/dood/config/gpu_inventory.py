"""The GPUs of a Docker host: listed in the dood config (`gpus.devices`) or discovered through the engine.

The config model lives here; discovery by a probe container, used when `devices` is empty, is
`dood.gpus.discovery`.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field, field_validator


class GpuInventory(BaseModel):
    """The GPUs of the Docker host behind `docker.url`, and how claims on them are taken."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    devices: tuple[str, ...] = Field(
        default=(),
        description=(
            "The host's GPUs as the nvidia driver names them: indexes ('0', '1') or UUIDs ('GPU-…'), one naming "
            "for all. Containers asking for GPUs get DeviceIDs from this list. Empty: discovered through the "
            "engine by a probe container (probe_image); given, it wins and no probe runs."
        ),
        examples=[["0", "1", "2", "3"]],
    )
    probe_image: str = Field(
        default="nvidia/cuda:12.4.1-base-ubuntu22.04",
        min_length=1,
        description=(
            "Image of the discovery probe, run once per engine when devices is empty: every GPU, "
            "`/usr/bin/nvidia-smi --query-gpu=index,uuid --format=csv,noheader`, where the NVIDIA Container "
            "Toolkit mounts the driver's nvidia-smi into any image. Pulled if the engine lacks it."
        ),
        examples=["nvidia/cuda:12.4.1-base-ubuntu22.04", "ubuntu:22.04"],
    )
    probe_timeout_seconds: float = Field(
        default=60, gt=0, description="How long discovery may take (the probe's pull, start and nvidia-smi)."
    )
    wait_recheck_seconds: float = Field(
        default=10,
        gt=0,
        description=(
            "A task waiting for GPUs wakes on the engine's die/destroy events; it also looks again after this "
            "long without one (a missed event costs at most this)."
        ),
    )
    lock_stale_seconds: float = Field(
        default=30,
        gt=0,
        description=(
            "The claim lock (a container named dood-gpu-lock) is held for one list-and-create, well under a "
            "second; one older than this was left by a holder that died, and is removed."
        ),
    )
    ticket_lease_seconds: float = Field(
        default=120,
        gt=0,
        description=(
            "A waiter's place in the queue (a ticket: a created, never started container) is renewed a third of "
            "this into it; one not renewed for this long belongs to a waiter that died, and no longer counts."
        ),
    )
    created_hold_seconds: float = Field(
        default=120,
        ge=0,
        description=(
            "A container created but never started holds its GPUs this long: its creator starts it at once, "
            "unless it died between create and start (the janitor removes such leftovers)."
        ),
    )

    @field_validator("devices", mode="before")
    @classmethod
    def _ids(cls, value: object) -> object:
        if isinstance(value, (str, int)):
            raise ValueError("must be a list of GPU ids, e.g. ['0', '1'] or ['GPU-8f6…']")
        if not isinstance(value, Iterable):
            return value
        ids = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, (str, int)):
                raise ValueError(f"{item!r}: a GPU id is an index or a UUID")
            text = str(item).strip()
            if not text or "," in text or text.lower() == "all":
                raise ValueError(f"{item!r}: one GPU per entry (no commas, not 'all')")
            if text in ids:
                raise ValueError(f"{text!r} is listed twice")
            ids.append(text)
        return tuple(ids)
