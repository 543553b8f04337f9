"""Who holds which GPU of the Docker host, read from the engine, and what a create body asks for.

Docker turns `DeviceRequests: [{Count: N}]` into GPUs `0 … N-1`, always: two `gpus: 1` trainings both land
on GPU 0. dood therefore creates every GPU container with explicit `DeviceIDs`, chosen among the GPUs no
other container holds, and labels it `dood.gpus=<ids>`. The engine is the only record: a container holds
its GPUs while it is running (or paused, restarting, or freshly created), and holds nothing once it has
ended, whatever ended it. Everything here is pure (decides, touches nothing). The inventory is
`dood.config.gpu_inventory`, the queue of waiters `dood.gpus.queue`, their wake-ups `dood.gpus.wakeup`;
`dood.gpus.claims` talks to the engine, `dood.proxy.gpus` referees creates passing through dood-proxy.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from dood.lifecycle.outcome import RUNNING
from dood.naming import (
    DAG_ID_LABEL,
    MAP_INDEX_LABEL,
    RUN_ID_LABEL,
    STACK_LABEL,
    TASK_ID_LABEL,
    TRY_NUMBER_LABEL,
)

#: The GPUs a container was created with (comma-separated DeviceIDs); forced by dood-proxy.
GPUS_LABEL = "dood.gpus"
#: On a claim holder: the ticket it was claimed with (that ticket is served, even before it is removed).
SERVED_LABEL = "dood.gpu_served"
#: States in which a container holds its GPUs ("created" only for `created_hold_seconds`).
RUNNING_STATES = frozenset(RUNNING)

Asked = int | Literal["all"]
#: How dood-proxy's refusal of a colliding GPU request begins; each held GPU then reads "GPU <id> is held by".
COLLISION = "the container's GPUs would collide"
_HELD = re.compile(r"GPU (\S+) is held by")


@dataclass(frozen=True)
class Holder:
    """A container holding GPUs, as the engine lists it."""

    container_id: str
    name: str
    state: str
    gpus: tuple[str, ...]
    labels: Mapping[str, str]

    def describe(self) -> str:
        """`dag/task/run try N (container, state)`, or the container alone when it is no task's."""
        labels = self.labels
        where = f"{self.name}, {self.state}"
        if labels.get(DAG_ID_LABEL):
            task = "/".join(labels.get(k, "?") for k in (DAG_ID_LABEL, TASK_ID_LABEL, RUN_ID_LABEL))
            index = labels.get(MAP_INDEX_LABEL, "-1")
            mapped = f"[{index}]" if index not in ("", "-1") else ""
            return f"{task}{mapped} try {labels.get(TRY_NUMBER_LABEL, '?')} ({where})"
        return where


def label_ids(value: str | None) -> tuple[str, ...]:
    """GPU ids of a `dood.gpus` label value (or of DeviceIDs joined by commas, as the engine joins them)."""
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


def holders(containers: Iterable[Mapping[str, Any]], *, created_hold_seconds: float, now: float | None = None):
    """The containers (entries of `GET /containers/json?all=1`) that hold GPUs now."""
    now = time.time() if now is None else now
    found = []
    for container in containers:
        labels = container.get("Labels") or {}
        ids = label_ids(labels.get(GPUS_LABEL))
        state = container.get("State") or ""
        fresh = state == "created" and now - float(container.get("Created") or 0) < created_hold_seconds
        if ids and (state in RUNNING_STATES or fresh):
            names = container.get("Names") or ["/" + container["Id"][:12]]
            found.append(Holder(container["Id"], names[0].lstrip("/"), state, ids, labels))
    return found


def held_by(holding: Iterable[Holder]) -> dict[str, Holder]:
    """GPU id -> the container holding it."""
    return {gpu: holder for holder in holding for gpu in holder.gpus}


# --- what a create body asks for ---


def _gpu_requests(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    requests = (body.get("HostConfig") or {}).get("DeviceRequests") or []
    return [r for r in requests if isinstance(r, Mapping) and any("gpu" in c for c in r.get("Capabilities") or [])]


def count_phrase(wanted: Asked) -> str:
    """How a log line names what a waiter asks for: "1 GPU", "2 GPUs", "all GPUs"."""
    return "all GPUs" if wanted == "all" else f"{wanted} GPU{'s' if wanted != 1 else ''}"


def asked(body: Mapping[str, Any]) -> Asked | None:
    """How many GPUs a create body asks for without naming them (`Count`; -1 is 'all'); None: no such request."""
    total = 0
    for request in _gpu_requests(body):
        if request.get("DeviceIDs"):
            continue
        count = request.get("Count") or 0
        if count == -1:
            return "all"
        total += count
    return total or None


def named(body: Mapping[str, Any]) -> tuple[str, ...]:
    """The GPUs a create body names (`DeviceIDs`)."""
    return tuple(gpu for r in _gpu_requests(body) for entry in r.get("DeviceIDs") or [] for gpu in label_ids(entry))


#: A GPU index as the engine and the driver read it unambiguously: decimal, no sign, no leading zero.
PLAIN_INDEX = re.compile(r"0|[1-9][0-9]*")


def canonical_device_ids(body: dict[str, Any], aliases: Mapping[str, str] | None, *, known_as: str = "") -> list[str]:
    """Rewrite every GPU request's `DeviceIDs` (in place) to the inventory's own ids, one per entry; the
    problems, each naming its field (empty: rewritten). `aliases` maps every accepted spelling (an index, a
    UUID) to its GPU's id; None: no inventory is known, and only plain indexes ('0', '12') are accepted,
    the one spelling that cannot name a GPU twice. `known_as` says where `aliases` came from."""
    problems: list[str] = []
    requests = (body.get("HostConfig") or {}).get("DeviceRequests") or []
    if not isinstance(requests, list):
        return ["HostConfig.DeviceRequests: must be a list"]
    for index, request in enumerate(requests):
        gpu_request = any(request is r for r in _gpu_requests(body))
        if not isinstance(request, dict) or not gpu_request or not request.get("DeviceIDs"):
            continue
        field = f"HostConfig.DeviceRequests[{index}].DeviceIDs"
        entries = request["DeviceIDs"]
        if not isinstance(entries, list) or not all(isinstance(entry, str) for entry in entries):
            problems.append(f"{field}: must be a list of GPU ids (strings)")
            continue
        ids: list[str] = []
        for position, entry in enumerate(entries):
            for part in entry.split(","):  # the engine joins the entries with commas: each part is one GPU
                gpu = part.strip()
                if aliases is None:
                    if PLAIN_INDEX.fullmatch(gpu):
                        ids.append(gpu)
                        continue
                    problems.append(
                        f"{field}[{position}]: {gpu!r} is not a plain GPU index ('0', '1', ...: no leading zeros, no "
                        "UUIDs, not 'all'); dood-proxy knows no GPU inventory to read other names with (list the "
                        "GPUs in gpus.devices of its --config, or let GPU discovery record them)"
                    )
                elif gpu in aliases:
                    ids.append(aliases[gpu])
                else:
                    shown = sorted(set(aliases.values()), key=lambda g: (len(g), g))
                    problems.append(
                        f"{field}[{position}]: {gpu!r} is not a GPU of this Docker host (its GPUs: {shown}, "
                        f"{known_as}); name one of them"
                    )
        request["DeviceIDs"] = ids
    return problems


def choose(devices: Sequence[str], taken: Iterable[str], wanted: Asked) -> tuple[str, ...] | None:
    """The first `wanted` free GPUs of the inventory (all of them for 'all'); None while too few are free."""
    taken = set(taken)
    if wanted == "all":
        return tuple(devices) if devices and not taken.intersection(devices) else None
    free = [gpu for gpu in devices if gpu not in taken]
    return tuple(free[:wanted]) if len(free) >= wanted else None


def claimed_body(body: Mapping[str, Any], ids: Sequence[str], *, ticket: str | None = None) -> dict[str, Any]:
    """The body with its counted GPU request(s) replaced by one naming `ids`, and labelled `dood.gpus` (and
    `dood.gpu_served` with the waiter's ticket, which that label marks as served)."""
    claimed = copy.deepcopy(dict(body))
    host = claimed.setdefault("HostConfig", {})
    requests = host.get("DeviceRequests") or []
    counted = [r for r in _gpu_requests(claimed) if not r.get("DeviceIDs")]
    template = dict(counted[0]) if counted else {"Driver": "", "Capabilities": [["gpu"]], "Options": {}}
    kept = [r for r in requests if not any(r is c for c in counted)]
    host["DeviceRequests"] = [*kept, {**template, "Count": 0, "DeviceIDs": list(ids)}]
    claimed["Labels"] = {**(claimed.get("Labels") or {}), GPUS_LABEL: ",".join(ids)}
    if ticket:
        claimed["Labels"][SERVED_LABEL] = ticket
    return claimed


def never_fits(devices: Sequence[str], wanted: Asked) -> str | None:
    """Why this request can never be granted on this inventory, or None."""
    if not devices:
        return (
            "the dood config lists no GPUs of the Docker host: set gpus.devices (e.g. ['0', '1']) to the ids the "
            "nvidia driver shows there (nvidia-smi -L)"
        )
    if wanted != "all" and wanted > len(devices):
        return f"asks for {wanted} GPUs; the Docker host has {len(devices)} (gpus.devices: {list(devices)})"
    return None


#: The engine-wide claim lock (`dood.gpu_lock`): a never-started container of this name, labelled with its holder.
LOCK_NAME = "dood-gpu-lock"
LOCK_LABEL = "dood.gpu_lock"  # value: who holds it, host:pid
#: In dood-proxy's refusal of a client's create of the lock: the proxy takes the lock itself.
PROXY_TAKES_LOCK = "dood-proxy takes the GPU claim lock itself"
#: Discovery's record (`dood.gpus.discovery`): the exited probe container of this name, labelled with its image.
PROBE_NAME = "dood-gpu-probe"
PROBE_LABEL = "dood.gpu_probe"  # value: the image it ran


def parse_gpus(text: str) -> list[tuple[str, str]]:
    """(index, uuid) per line of `nvidia-smi --query-gpu=index,uuid --format=csv,noheader`."""
    found = []
    for line in text.splitlines():
        if not line.strip():
            continue
        index, comma, uuid = (part.strip() for part in line.partition(","))
        if not comma or not index.isdigit() or not uuid or "," in uuid:
            raise ValueError(f"not an 'index, uuid' line of nvidia-smi: {line.strip()!r}")
        found.append((index, uuid))
    if not found:
        raise ValueError("nvidia-smi listed no GPU")
    if len({index for index, _ in found}) != len(found):
        raise ValueError(f"nvidia-smi listed one index twice: {[index for index, _ in found]}")
    return found


#: Discovery's probe (`dood.gpus.discovery`) is given every GPU, only to run the driver's own query: with the
#: `utility` capability the NVIDIA toolkit mounts the host's nvidia-smi over this path, whatever the image has.
PROBE_ENTRYPOINT = ["/usr/bin/nvidia-smi"]
PROBE_QUERY = ["--query-gpu=index,uuid", "--format=csv,noheader"]


def is_probe(body: Mapping[str, Any], images: Iterable[str]) -> bool:
    """Whether a create body is exactly discovery's probe (every GPU, the driver's nvidia-smi query) of one of
    these `images` (the policy's `gpu_probe_images`). The probe runs the image's own loader and libraries with
    every GPU, so neither the image nor anything that could bring code in (Env such as LD_PRELOAD, mounts) is
    the caller's choice."""
    requests = _gpu_requests(body)
    host_config = body.get("HostConfig") or {}
    return (
        body.get("Image") in set(images)
        and body.get("Entrypoint") == PROBE_ENTRYPOINT
        and body.get("Cmd") == PROBE_QUERY
        and not body.get("Env")
        and not body.get("Volumes")
        and not any(host_config.get(key) for key in ("Binds", "Mounts", "VolumesFrom", "Devices"))
        and len(requests) == 1
        and requests[0].get("Count") == -1
        and not requests[0].get("DeviceIDs")
        and any("utility" in capabilities for capabilities in requests[0].get("Capabilities") or [])
    )


def referee(body: Mapping[str, Any], holding: Iterable[Holder], probe_images: Iterable[str] = ()) -> list[str]:
    """Why a create must be refused so that no two containers share a GPU (dood-proxy's check): a count the
    engine would turn into GPUs 0…N-1 whoever holds them (but discovery's probe), or GPUs another holds."""
    problems = []
    if asked(body) is not None and body.get("Entrypoint") == PROBE_ENTRYPOINT and not is_probe(body, probe_images):
        problems.append(
            f"GPU discovery's probe may run only as dood asks it and with an image of policy.gpu_probe_images "
            f"({list(probe_images)}), not {body.get('Image')!r}: list that image there, or the GPUs in gpus.devices"
        )
    elif asked(body) is not None and not is_probe(body, probe_images):
        problems.append(
            "DeviceRequests: a GPU Count without DeviceIDs gets GPUs 0…N-1 whoever holds them; name free GPUs "
            "in DeviceIDs (dood's launcher claims them for you)"
        )
    ids = named(body)
    if len(set(ids)) != len(ids):
        problems.append(f"DeviceRequests: GPUs {list(ids)} name one GPU twice")
    taken = held_by(holding)
    for gpu in dict.fromkeys(ids):
        if gpu in taken:
            problems.append(f"GPU {gpu} is held by {taken[gpu].describe()}")
    return problems


def refused_as_held(message: str) -> tuple[str, ...] | None:
    """The GPUs dood-proxy named as held when it refused a create for a collision (None: no such refusal).
    Behind a stack's proxy, holders of other stacks are not listed to us; the referee still sees them."""
    if COLLISION not in message:
        return None
    return tuple(_HELD.findall(message))


def waiter_of(labels: Mapping[str, str]) -> str:
    """Who waits, from a create body's labels: the task instance (every try alike), or '' for no task's."""
    if not labels.get(DAG_ID_LABEL):
        return ""
    keys = (STACK_LABEL, DAG_ID_LABEL, TASK_ID_LABEL, RUN_ID_LABEL, MAP_INDEX_LABEL)
    return "/".join(labels.get(key, "") for key in keys)
