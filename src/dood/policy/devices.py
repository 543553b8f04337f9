"""Devices and GPUs: no host device, no block-IO device paths, GPUs only through DeviceRequests (named or
counted, never both in one request), and no restart policy on a container asking for GPUs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from dood.policy.problems import Problems, as_list, is_set

if TYPE_CHECKING:
    from dood.policy.body import Violation
    from dood.policy.model import Policy

#: Variables the NVIDIA container hook reads to choose GPUs and driver features (VISIBLE_DEVICES, REQUIRE_*,
#: DRIVER_CAPABILITIES, MIG_*...): refused in `Env`, whatever the rest of the name.
GPU_ENV_PREFIX = "NVIDIA_"
#: Per-device block-IO limits: each names a host device path, and the daemon's error says whether it exists.
BLKIO_DEVICE_FIELDS = (
    "BlkioWeightDevice",
    "BlkioDeviceReadBps",
    "BlkioDeviceWriteBps",
    "BlkioDeviceReadIOps",
    "BlkioDeviceWriteIOps",
)


def devices(body: Mapping, host: Mapping, policy: Policy) -> list[Violation]:
    found = Problems()
    for index, _ in enumerate(as_list(host.get("Devices"), "HostConfig.Devices", found)):
        found.add(f"HostConfig.Devices[{index}]", "device", "host devices are not allowed")
    for index, _ in enumerate(as_list(host.get("DeviceCgroupRules"), "HostConfig.DeviceCgroupRules", found)):
        found.add(f"HostConfig.DeviceCgroupRules[{index}]", "device", "device cgroup rules are not allowed")
    for name in BLKIO_DEVICE_FIELDS:
        if is_set(host.get(name)):
            found.add(
                f"HostConfig.{name}",
                "device",
                f"{name} names host device paths (the daemon's errors tell which exist); not allowed",
            )
    _gpu_requests(host, policy, found)
    _restart_policy(host, found)
    for index, entry in enumerate(as_list(body.get("Env"), "Env", found)):
        name = entry.partition("=")[0] if isinstance(entry, str) else ""
        if name.startswith(GPU_ENV_PREFIX):
            found.add(
                f"Env[{index}]",
                "gpu",
                f"{name}: {GPU_ENV_PREFIX}* variables choose the host's GPUs and driver features; the engine sets "
                "them from DeviceRequests, the only way to ask for GPUs",
            )
    return found


def _gpu_requests(host: Mapping, policy: Policy, found: Problems) -> None:
    total: int | None = 0
    for index, request in enumerate(as_list(host.get("DeviceRequests"), "HostConfig.DeviceRequests", found)):
        field = f"HostConfig.DeviceRequests[{index}]"
        if not policy.allow_gpus:
            found.add(field, "gpu", "GPU requests are not allowed (policy.allow_gpus is false)")
            continue
        if not isinstance(request, Mapping):
            found.add(field, "malformed", "must be a JSON object")
            continue
        if (request.get("Driver") or "") not in ("", "nvidia"):
            found.add(f"{field}.Driver", "gpu", f"{request.get('Driver')!r}: only the nvidia driver is allowed")
        capabilities = request.get("Capabilities") or []
        if not capabilities or not all(isinstance(c, list) and "gpu" in c for c in capabilities):
            found.add(f"{field}.Capabilities", "gpu", "only requests for the 'gpu' capability are allowed")
        count = request.get("Count")
        if request.get("DeviceIDs") and is_set(count):
            found.add(
                f"{field}.Count",
                "gpu",
                f"Count {count!r} together with DeviceIDs: the engine starts no request with both; name the GPUs "
                "in DeviceIDs alone (Count 0 or left out)",
            )
        asked = _gpus_asked(request)
        if asked == 0:
            found.add(
                field,
                "gpu",
                "asks for no GPU (Count 0, no DeviceIDs): the engine would then hand out the GPUs the image's "
                "NVIDIA_VISIBLE_DEVICES names, often all; give a Count or DeviceIDs",
            )
        elif policy.max_gpus is not None and (asked is None or asked > policy.max_gpus):
            shown = "all" if asked is None else asked
            found.add(field, "gpu", f"asks for {shown} GPUs; policy.max_gpus is {policy.max_gpus}")
            total = None
            continue
        total = None if asked is None or total is None else total + asked
    if policy.max_gpus is not None and total is not None and total > policy.max_gpus:
        found.add(
            "HostConfig.DeviceRequests",
            "gpu",
            f"asks for {total} GPUs over all requests; policy.max_gpus is {policy.max_gpus}",
        )


def _restart_policy(host: Mapping, found: Problems) -> None:
    """A container asking for GPUs takes no restart policy: the daemon would start it again by itself (after
    an exit, or when the daemon itself restarts), without dood-proxy checking that its GPUs are still free,
    and an exited container holds no GPU (`dood.gpus.holdings.holders`)."""
    if not is_set(host.get("DeviceRequests")):
        return
    restart = host.get("RestartPolicy")
    name = restart.get("Name") if isinstance(restart, Mapping) else restart
    if name in (None, "", "no"):
        return
    found.add(
        "HostConfig.RestartPolicy.Name",
        "gpu",
        f"{name!r}: the daemon would restart this GPU container by itself, without dood-proxy checking that its "
        "GPUs are still free (an exited container holds none); a container asking for GPUs takes no restart "
        "policy ('no' or none): retry the task instead",
    )


def _gpus_asked(request: Mapping) -> int | None:
    """How many GPUs one request is given: DeviceIDs one by one (the engine joins them with commas), else
    Count; None for every GPU (Count -1, an id 'all') or a value the engine would not read as a number."""
    ids = request.get("DeviceIDs") or []
    if ids:
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return None
        names = [part.strip() for i in ids for part in i.split(",") if part.strip()]
        return None if any(name.lower() == "all" for name in names) else len(names)
    count = request.get("Count") or 0
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        return None
    return count
