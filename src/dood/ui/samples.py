"""CPU % and memory of a container from the engine's one-shot stats samples (pure).

A one-shot sample (`stream=false&one-shot=true`) answers at once but carries no previous CPU reading, so
the CPU % is the change between two samples of the same container, as `docker stats` computes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CpuReading:
    container_total: int
    system_total: int
    online_cpus: int


@dataclass(frozen=True)
class Usage:
    cpu_percent: float | None
    memory_bytes: int | None
    memory_limit: int | None


def cpu_reading(sample: Mapping[str, Any]) -> CpuReading | None:
    stats = sample.get("cpu_stats") or {}
    total = (stats.get("cpu_usage") or {}).get("total_usage")
    system = stats.get("system_cpu_usage")
    if not isinstance(total, int) or not isinstance(system, int):
        return None
    online = stats.get("online_cpus") or len((stats.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
    return CpuReading(total, system, int(online))


def cpu_percent(now: CpuReading | None, before: CpuReading | None) -> float | None:
    """`docker stats`' formula: the container's share of the host's CPU time between two readings."""
    if now is None or before is None:
        return None
    container, system = now.container_total - before.container_total, now.system_total - before.system_total
    if system <= 0 or container < 0:
        return None
    return round(container / system * now.online_cpus * 100, 1)


def memory(sample: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """Memory in use without the page cache (cgroup v2 `inactive_file`, v1 `total_inactive_file`), and the limit."""
    stats = sample.get("memory_stats") or {}
    usage = stats.get("usage")
    if not isinstance(usage, int):
        return None, None
    details = stats.get("stats") or {}
    cache = details.get("inactive_file", details.get("total_inactive_file", 0))
    limit = stats.get("limit")
    return max(usage - (cache if isinstance(cache, int) else 0), 0), limit if isinstance(limit, int) else None


def usage(sample: Mapping[str, Any] | None, before: CpuReading | None) -> Usage:
    if not sample:
        return Usage(None, None, None)
    used, limit = memory(sample)
    return Usage(cpu_percent(cpu_reading(sample), before), used, limit)


def gpus_held(host_config: Mapping[str, Any] | None) -> int | str | None:
    """GPUs a container asked for: a count, `all`, or the number of device ids (None: none)."""
    total = 0
    for request in (host_config or {}).get("DeviceRequests") or []:
        if "gpu" not in [cap for caps in request.get("Capabilities") or [] for cap in caps]:
            continue
        if request.get("DeviceIDs"):
            total += len(request["DeviceIDs"])
        elif request.get("Count") == -1:
            return "all"
        else:
            total += int(request.get("Count") or 0)
    return total or None
