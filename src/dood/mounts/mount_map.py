"""Bind mounts as Airflow sees them, translated to paths the host daemon can resolve.

A bind source is resolved by the Docker *host*, not by the Airflow container that asks for it, so every
source goes through the mount map (longest prefix wins) after `..` and symlinks are resolved on the
Airflow side. Named volumes are host-independent and pass untouched.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal

from docker.types import Mount
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dood.config.endpoints import MountMapEntry
from dood.exceptions import BindSourceMissing, DoodConfigError, MountMapConflict, MountNotMapped


class DoodMount(BaseModel):
    """One mount of a launched container, with its source given as Airflow sees it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(description="Airflow-side absolute path (bind) or volume name (volume).")
    target: str = Field(description="Absolute path inside the launched container.")
    read_only: bool = False
    type: Literal["bind", "volume"] = "bind"

    @field_validator("target")
    @classmethod
    def _absolute_target(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must be an absolute path inside the container, got {value!r}")
        return value

    @classmethod
    def parse(cls, spec: DoodMount | Mapping | str, field: str) -> DoodMount:
        """Accept a DoodMount, a dict, or Docker's short form 'source:target[:ro|rw]'."""
        if isinstance(spec, DoodMount):
            return spec
        try:
            if isinstance(spec, str):
                parts = spec.split(":")
                if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
                    raise ValueError(f"expected 'source:target[:ro|rw]', got {spec!r}")
                source = parts[0]
                mount_type: Literal["bind", "volume"] = "bind" if source.startswith(("/", ".")) else "volume"
                return cls(source=source, target=parts[1], read_only=parts[2:] == ["ro"], type=mount_type)
            return cls.model_validate(spec)
        except (ValidationError, ValueError) as exc:
            raise DoodConfigError(f"{field}: invalid mount {spec!r}: {exc}") from None


class MountMap:
    """Airflow-side path -> host path translation; `identity` maps uncovered paths to themselves."""

    def __init__(self, entries: Iterable[MountMapEntry], *, identity: bool) -> None:
        self.entries = tuple(
            sorted(
                (MountMapEntry(airflow_path=os.path.realpath(e.airflow_path), host_path=e.host_path) for e in entries),
                key=lambda e: len(e.airflow_path),
                reverse=True,
            )
        )
        self.identity = identity

    def to_host(self, path: str, field: str = "mounts") -> str:
        """The host path of an Airflow-side path; refuses one no entry covers (unless identity)."""
        if not os.path.isabs(path):
            raise DoodConfigError(f"{field}: bind source {path!r} must be an absolute path")
        resolved = os.path.realpath(path)
        for entry in self.entries:  # longest prefix first
            if resolved == entry.airflow_path or resolved.startswith(entry.airflow_path.rstrip("/") + "/"):
                rest = os.path.relpath(resolved, entry.airflow_path)
                return entry.host_path if rest == "." else os.path.join(entry.host_path, rest)
        if self.identity:
            return resolved
        known = "\n".join(f"  - {e.airflow_path} -> {e.host_path}" for e in self.entries) or "  (none)"
        raise MountNotMapped(
            f"{field}: bind source {path!r} (resolved {resolved!r}) is not covered by the mount map, so the "
            f"Docker host would not find it. Known entries:\n{known}\n"
            "Add an entry under `mount_map` in the dood config, or mount that directory into the Airflow "
            "container so discovery finds it."
        )

    def local_view(self, path: str) -> str | None:
        """Where this process sees the bind source `path` as the Docker host will see it, or None where it
        cannot: under an entry, the Airflow-side path when that entry's Airflow-side directory is here (a
        mount of the host's directory: what is missing here is missing there); uncovered with `identity`
        (Airflow on the Docker host's filesystem), the path itself. dood-proxy sees host paths, but cannot be
        asked whether one exists: where this process cannot see a source, Docker or the proxy refuses it."""
        resolved = os.path.realpath(path)
        for entry in self.entries:  # longest prefix first
            if resolved == entry.airflow_path or resolved.startswith(entry.airflow_path.rstrip("/") + "/"):
                return resolved if os.path.isdir(entry.airflow_path) else None
        return resolved if self.identity else None


def discovered_entries(container_inspect: Mapping) -> list[MountMapEntry]:
    """Mount-map entries read from `docker inspect` of the Airflow container itself."""
    entries = []
    for mount in container_inspect.get("Mounts") or []:
        if mount.get("Type") in ("bind", "volume") and mount.get("Source") and mount.get("Destination"):
            entries.append(MountMapEntry(airflow_path=mount["Destination"], host_path=mount["Source"]))
    return entries


def reconcile(configured: Sequence[MountMapEntry], discovered: Sequence[MountMapEntry]) -> list[MountMapEntry]:
    """Merge both maps; any configured entry the discovered mounts contradict fails with both shown."""
    truth = MountMap(discovered, identity=False)
    conflicts = []
    for entry in configured:
        try:
            actual = truth.to_host(entry.airflow_path)
        except MountNotMapped:
            actual = "<not a mount of this container>"
        if actual != os.path.normpath(entry.host_path):
            conflicts.append(f"  - {entry.airflow_path}: config says {entry.host_path}, container has {actual}")
    if conflicts:
        raise MountMapConflict(
            "The configured mount_map disagrees with the mounts discovered on this Airflow container:\n"
            + "\n".join(conflicts)
            + "\nFix `mount_map` in the dood config (or the container's volumes) so both agree; "
            "set mount_discovery.mode: off to trust the config alone."
        )
    return [*discovered, *configured]


def mount_map_in_force(
    configured: Sequence[MountMapEntry],
    mode: str,
    own_container: Callable[[], Mapping | None],
    tried: Callable[[], object],
) -> MountMap:
    """The mount map in force under `mount_discovery.mode`: the config alone (`off`), or checked against
    and extended by what our own container really mounts (`own_container()`: its inspect, None when the
    daemon runs no container of ours). Without one, Airflow shares the daemon's filesystem (Airflow on the
    host) and uncovered paths map to themselves; `required` refuses that, naming what was `tried`."""
    if mode == "off":
        return MountMap(configured, identity=not configured)
    own = own_container()
    if own is None:
        if mode == "required":
            raise DoodConfigError(
                "mount_discovery.mode is 'required' but the Docker daemon runs no container of ours "
                f"(tried {tried()}). Set it to 'auto' when Airflow runs on the host."
            )
        return MountMap(configured, identity=True)
    return MountMap(reconcile(configured, discovered_entries(own)), identity=False)


def check_bind_sources(raw: Sequence[DoodMount | Mapping | str], mount_map: MountMap, what: str) -> None:
    """Refuse a bind source that does not exist where this process can see it (`MountMap.local_view`), naming
    the mount and the fix, before anything is created. Called once dood has made the directories it makes
    (a pipeline's partition): what is still missing is the task's mistake. A source this process cannot see,
    or may not look at, is left to Docker (or dood-proxy) to judge."""
    for index, spec in enumerate(raw):
        field = f"{what}: mounts[{index}]"
        mount = DoodMount.parse(spec, field)
        if mount.type != "bind":
            continue
        local = mount_map.local_view(mount.source)
        if local is None or _exists(local):
            continue
        shown = spec if isinstance(spec, str) else f"{mount.source}:{mount.target}{':ro' if mount.read_only else ''}"
        host_path = mount_map.to_host(mount.source, field)
        raise BindSourceMissing(field=field, spec=shown, source=mount.source, host_path=host_path)


def _exists(path: str) -> bool:
    """Whether `path` exists; True when this process may not tell (no permission): Docker decides then."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return True
    return True


def host_mounts(raw: Sequence[DoodMount | Mapping | str], mount_map: MountMap, what: str, reserved: str) -> list[Mount]:
    """A task's mounts as the Docker host must see them: each parsed, bind sources through the mount map;
    `reserved` (the run directory's target) is the task's own and refused as a target."""
    mounts = []
    for index, spec in enumerate(raw):
        field = f"{what}: mounts[{index}]"
        mount = DoodMount.parse(spec, field)
        if mount.target == reserved:
            raise DoodConfigError(f"{field}: {reserved} is reserved")
        source = mount_map.to_host(mount.source, field) if mount.type == "bind" else mount.source
        mounts.append(Mount(target=mount.target, source=source, type=mount.type, read_only=mount.read_only))
    return mounts
