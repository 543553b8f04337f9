"""The GPUs of a Docker host discovered through its engine, when the dood config does not list them.

A short probe container asks for every GPU (`DeviceRequests`: driver nvidia, `Count: -1`, capabilities
gpu and utility) and runs `/usr/bin/nvidia-smi --query-gpu=index,uuid --format=csv,noheader`: with `utility`
the NVIDIA Container Toolkit mounts the host driver's nvidia-smi there, into any image (`gpus.probe_image`).
Its output is the inventory, by index. dood-proxy lets exactly this body through (`dood.gpus.holdings.is_probe`),
although it refuses every other `Count`.

Cached twice: per process (a task's process claims, and its trigger is built from the same inventory), and
in the engine itself: the probe container, named `dood-gpu-probe`, is kept after it exits and its log *is*
the record. Every process on every host using that engine (workers, triggerer, `dood-gpus`) then reads
one inspect and one log instead of running a probe per task, and the name makes the probe run once even
when many processes ask at the same time (the others get 409 and read the winner's result). GPUs only
change with the machine (a reboot, the driver): `dood-gpus --rediscover` removes the record and probes again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from dood.exceptions import DoodConfigError
from dood.gpus.holdings import PROBE_ENTRYPOINT, PROBE_LABEL, PROBE_NAME, PROBE_QUERY, parse_gpus

if TYPE_CHECKING:
    from docker import APIClient

    from dood.config.gpu_inventory import GpuInventory

_FOUND: dict[str, Discovered] = {}  # Docker URL -> what this process discovered there


@dataclass(frozen=True)
class Discovered:
    """An inventory and where it came from: the config, or the probe container (its image and end)."""

    devices: tuple[str, ...]
    source: str  # "config" or "probe"
    uuids: tuple[str, ...] = ()
    image: str = ""
    probed_at: str = ""

    def describe(self) -> str:
        if self.source == "config":
            return "listed in gpus.devices (the dood config)"
        return f"discovered through the engine (container {PROBE_NAME}, image {self.image}, {self.probed_at})"


class DiscoveryFailed(DoodConfigError):
    """The probe could not list the GPUs; the message names `gpus.devices` as the way around it."""

    def __init__(self, url: str, image: str, why: str) -> None:
        super().__init__(
            f"GPU discovery on {url} failed: {why}. List the host's GPUs in the dood config instead: "
            "gpus.devices: ['0', '1', ...] (the indexes `nvidia-smi -L` shows on the Docker host); or make the "
            f"probe work: the NVIDIA Container Toolkit on the engine, and gpus.probe_image ({image}) present there"
        )


#: Who the probe runs as when no step identity is given: nobody (GPU device nodes are open to all). Behind
#: dood-proxy it must be an identity of policy.allowed_users: the steps' own is passed in.
PROBE_USER = "65534:65534"


def probe_body(image: str, user: str | None = None) -> dict[str, Any]:
    return {
        "Image": image,
        "Entrypoint": PROBE_ENTRYPOINT,
        "Cmd": PROBE_QUERY,
        "User": user or PROBE_USER,
        "Labels": {PROBE_LABEL: image},
        "HostConfig": {
            "DeviceRequests": [{"Driver": "nvidia", "Count": -1, "Capabilities": [["gpu", "utility"]]}],
            "SecurityOpt": ["no-new-privileges"],
        },
    }


def inventory_of(
    api: APIClient, url: str, inventory: GpuInventory, user: str | None = None
) -> tuple[GpuInventory, Discovered]:
    """The inventory with its devices: the config's when it lists them, else discovered (cached)."""
    if inventory.devices:
        return inventory, Discovered(inventory.devices, "config")
    found = discover(api, url, image=inventory.probe_image, timeout=inventory.probe_timeout_seconds, user=user)
    return inventory.model_copy(update={"devices": found.devices}), found


def known_devices(url: str) -> tuple[str, ...]:
    """What this process discovered at `url` already (no API call): empty when it discovered nothing."""
    found = _FOUND.get(url)
    return found.devices if found else ()


def discover(
    api: APIClient, url: str, *, image: str, timeout: float = 60, again: bool = False, user: str | None = None
) -> Discovered:
    """The engine's GPUs: this process's cache, else the probe container's record, else a probe."""
    if again:
        _FOUND.pop(url, None)
        _forget(api)
    if url in _FOUND:
        return _FOUND[url]
    deadline = time.monotonic() + timeout
    try:
        found = _read_or_probe(api, url, image, deadline, user)
    except (DockerException, OSError) as exc:
        raise DiscoveryFailed(url, image, f"the engine refused the probe: {exc}") from exc
    _FOUND[url] = found
    return found


def _read_or_probe(api: APIClient, url: str, image: str, deadline: float, user: str | None) -> Discovered:
    while True:
        try:
            probe = api.inspect_container(PROBE_NAME)
        except NotFound:
            probe = None
        if probe is not None:
            state = probe.get("State") or {}
            ran = (probe.get("Config") or {}).get("Labels", {}).get(PROBE_LABEL)
            if state.get("Status") == "exited" and state.get("ExitCode") == 0 and ran == image:
                return _read(api, url, probe)
            if state.get("Status") in ("created", "running") and ran == image:
                if time.monotonic() > deadline:
                    raise DiscoveryFailed(url, image, f"the probe container {PROBE_NAME} did not finish in time")
                time.sleep(0.1)  # another process is probing: its result is ours
                continue
            _remove(api, probe["Id"])  # failed, or another image's: probe again
        try:
            created = api.create_container_from_config(probe_body(image, user), name=PROBE_NAME)["Id"]
        except ImageNotFound:
            api.pull(image)
            continue
        except APIError as exc:
            if exc.status_code == 409:
                continue  # another process created it first: wait for its result
            raise
        return _run(api, url, image, created, deadline)


def _run(api: APIClient, url: str, image: str, container_id: str, deadline: float) -> Discovered:
    try:
        api.start(container_id)
        exit_code = api.wait(container_id, timeout=max(1.0, deadline - time.monotonic()))["StatusCode"]  # type: ignore[arg-type] # requests takes a float
        output = api.logs(container_id, stdout=True, stderr=True).decode(errors="replace")
    except BaseException:
        _remove(api, container_id)
        raise
    if exit_code != 0:
        _remove(api, container_id)
        tail = " / ".join(output.strip().splitlines()[-3:]) or "no output"
        raise DiscoveryFailed(url, image, f"nvidia-smi in the probe exited with {exit_code} ({tail})")
    return _read(api, url, api.inspect_container(container_id))


def _read(api: APIClient, url: str, probe: dict[str, Any]) -> Discovered:
    image = probe["Config"]["Labels"][PROBE_LABEL]
    output = api.logs(probe["Id"], stdout=True, stderr=False).decode(errors="replace")
    try:
        gpus = parse_gpus(output)
    except ValueError as exc:
        _remove(api, probe["Id"])
        raise DiscoveryFailed(url, image, str(exc)) from exc
    return Discovered(
        devices=tuple(index for index, _ in gpus),
        source="probe",
        uuids=tuple(uuid for _, uuid in gpus),
        image=image,
        probed_at=f"{finished[:19]}Z" if (finished := (probe.get("State") or {}).get("FinishedAt")) else "",
    )


def _forget(api: APIClient) -> None:
    try:
        _remove(api, api.inspect_container(PROBE_NAME)["Id"])
    except NotFound:
        pass


def _remove(api: APIClient, container_id: str) -> None:
    try:
        api.remove_container(container_id, force=True)
    except NotFound:
        pass
    except APIError as exc:
        if exc.status_code != 409:  # already being removed
            raise
