"""Bind mounts, mounts and named volumes: host paths under the allowed roots, never a socket or a system path.

Pure and lexical: whether the directories of a bind source can be changed by someone untrusted is checked
where the host's filesystem is seen (`dood.mounts.source_safety`, by dood-proxy at create and start).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dood.policy.paths import clean_path, socket_like, system_path_conflict, under, under_any
from dood.policy.problems import Problems, as_list, is_set

if TYPE_CHECKING:
    from dood.policy.body import Violation
    from dood.policy.model import Policy

SHARED_PROPAGATIONS = frozenset({"shared", "rshared", "slave", "rslave"})
#: The options a bind ('src:dst:opts') may carry: read-only or not, private propagation, and the no-op
#: consistency hints. Not `z`/`Z` (the daemon relabels the *host* source for SELinux), not shared/slave.
ALLOWED_BIND_OPTIONS = frozenset({"", "ro", "rw", "private", "rprivate", "consistent", "cached", "delegated"})
#: The `BindOptions` of a mount that may be set (propagation only to private).
ALLOWED_BIND_MOUNT_OPTIONS = frozenset({"Propagation", "NonRecursive", "CreateMountpoint", "ReadOnlyForceRecursive"})


def _bind_source(source: Any, field: str, read_only: bool, policy: Policy, found: Problems) -> None:
    if not isinstance(source, str) or not source.startswith("/"):
        found.add(field, "bind-source", f"{source!r}: a bind source must be an absolute host path")
        return
    path, shown = clean_path(source), repr(source)
    if socket_like(path):
        found.add(field, "docker-socket", f"{shown}: mounting a socket (the Docker socket) is never allowed")
        return
    system = system_path_conflict(path)
    if system:
        found.add(field, "system-path", f"{shown} is or contains the system path {system}; never allowed")
        return
    if not under_any(path, policy.allowed_host_roots):
        found.add(field, "bind-root", f"{shown} is outside policy.allowed_host_roots {list(policy.allowed_host_roots)}")
        return
    if not read_only and under_any(path, policy.read_only_host_roots):
        found.add(field, "bind-read-only", f"{shown} lies under a read-only root; mount it read-only")


def binds(host: Mapping, policy: Policy) -> list[Violation]:
    found = Problems()
    for index, bind in enumerate(as_list(host.get("Binds"), "HostConfig.Binds", found)):
        field = f"HostConfig.Binds[{index}]"
        if not isinstance(bind, str) or not bind:
            found.add(field, "malformed", "must be 'source:target[:options]'")
            continue
        parts = bind.split(":")
        if len(parts) > 3:
            found.add(field, "malformed", f"{bind!r}: expected 'source:target[:options]'")
            continue
        if len(parts) == 1:
            continue  # an anonymous volume: nothing of the host's or anybody's
        if not parts[0].startswith("/"):
            _named_volume(parts[0], field, policy, found)
            continue
        options = set((parts[2] if len(parts) == 3 else "").split(","))  # exactly as the daemon reads them
        if options & SHARED_PROPAGATIONS:
            found.add(field, "propagation", "shared or slave mount propagation is not allowed")
        relabel = options & {"z", "Z"}
        if relabel:
            found.add(field, "bind-option", f"{bind!r}: ':z'/':Z' make the daemon relabel the host source (SELinux)")
        unknown = sorted(options - ALLOWED_BIND_OPTIONS - SHARED_PROPAGATIONS - relabel)
        if unknown:
            found.add(
                field,
                "bind-option",
                f"{bind!r}: options {unknown} are not allowed (allowed: {sorted(ALLOWED_BIND_OPTIONS - {''})})",
            )
        _bind_source(parts[0], field, "ro" in options, policy, found)
    return found


def mounts(host: Mapping, policy: Policy) -> list[Violation]:
    found = Problems()
    for index, mount in enumerate(as_list(host.get("Mounts"), "HostConfig.Mounts", found)):
        field = f"HostConfig.Mounts[{index}]"
        if not isinstance(mount, Mapping):
            found.add(field, "malformed", "must be a JSON object")
            continue
        kind = mount.get("Type") or "volume"
        if kind == "bind":
            options = mount.get("BindOptions") or {}
            options = options if isinstance(options, Mapping) else {"?": options}
            propagation = options.get("Propagation")
            if is_set(propagation) and propagation not in ("private", "rprivate"):
                found.add(
                    f"{field}.BindOptions.Propagation",
                    "propagation",
                    f"{propagation!r}: only private propagation is allowed (shared or slave reach the host's mounts)",
                )
            for key in sorted(set(options) - ALLOWED_BIND_MOUNT_OPTIONS):
                if is_set(options[key]):
                    found.add(f"{field}.BindOptions.{key}", "bind-option", f"{key} is not allowed on a bind mount")
            _bind_source(mount.get("Source"), f"{field}.Source", bool(mount.get("ReadOnly")), policy, found)
        elif kind == "volume":
            if is_set(mount.get("Source")):
                _named_volume(mount.get("Source"), f"{field}.Source", policy, found)
            driver = (mount.get("VolumeOptions") or {}).get("DriverConfig")
            if is_set(driver):
                found.add(
                    f"{field}.VolumeOptions.DriverConfig",
                    "volume-driver",
                    "volume driver options are not allowed (they can bind any host path)",
                )
        elif kind != "tmpfs":
            found.add(f"{field}.Type", "mount-type", f"{kind!r}: only bind, volume and tmpfs mounts are allowed")
    return found


def _named_volume(name: Any, field: str, policy: Policy, found: Problems) -> None:
    if not isinstance(name, str) or not any(fnmatch.fnmatchcase(name, p) for p in policy.allowed_volumes):
        found.add(field, "named-volume", f"named volume {name!r} is not in policy.allowed_volumes")


#: Where no working directory may be: the kernel's views (a /proc/self/fd/N working directory is how runc's
#: leaked-descriptor escape, CVE-2024-21626, reached the host).
KERNEL_PATHS = ("/proc", "/sys", "/dev")


def nesting(body: Mapping, host: Mapping, policy: Policy) -> list[Violation]:
    """No mount target (bind, volume, tmpfs) and no working directory inside a bind's target.

    The runtime makes a missing mount point, as root, inside whatever is mounted above it: a target nested
    in a bind of a host directory creates entries in that host directory (into a read-only root too), and
    racing symlinks in a leaf bound above it steers that root-owned creation anywhere on the host (runc's
    CVE-2024-45310). Targets are compared cleaned; each mount must stand on the container's own filesystem."""
    found = Problems()
    targets = _targets(body, host)
    binds = [(field, target) for field, target, is_bind in targets if is_bind]
    for field, target, _ in targets:
        for outer_field, outer in binds:
            if outer_field != field and target != outer and under(target, outer):
                found.add(
                    field,
                    "nested-mount",
                    f"target {target!r} lies inside the bind at {outer!r} ({outer_field}): the runtime would create "
                    "its mount point, as root, in that host directory; mount it beside the bind, not in it",
                )
                break
    workdir = body.get("WorkingDir")
    if isinstance(workdir, str) and workdir:
        clean = clean_path(workdir) if workdir.startswith("/") else workdir
        if not clean.startswith("/") or under_any(clean, KERNEL_PATHS):
            found.add("WorkingDir", "working-dir", f"{workdir!r}: an absolute path outside /proc, /sys and /dev")
        else:
            for outer_field, outer in binds:
                if clean != outer and under(clean, outer):
                    found.add(
                        "WorkingDir",
                        "working-dir",
                        f"{workdir!r} lies inside the bind at {outer!r} ({outer_field}): the runtime would create it, "
                        "as root, in that host directory; use the bind's target itself or a path beside it",
                    )
                    break
    return found


def _targets(body: Mapping, host: Mapping) -> list[tuple[str, str, bool]]:
    """`(field, cleaned target, is a bind of a host path)` of every mount the body asks for."""
    found: list[tuple[str, str, bool]] = []
    for index, bind in enumerate(host.get("Binds") or [] if isinstance(host.get("Binds"), list) else []):
        parts = bind.split(":") if isinstance(bind, str) else []
        if len(parts) == 1 and parts[0].startswith("/"):
            found.append((f"HostConfig.Binds[{index}]", clean_path(parts[0]), False))  # an anonymous volume
        elif len(parts) >= 2 and parts[1].startswith("/"):
            found.append((f"HostConfig.Binds[{index}]", clean_path(parts[1]), parts[0].startswith("/")))
    for index, mount in enumerate(host.get("Mounts") or [] if isinstance(host.get("Mounts"), list) else []):
        target = mount.get("Target") if isinstance(mount, Mapping) else None
        if isinstance(target, str) and target.startswith("/"):
            kind = mount.get("Type") or "volume"
            found.append((f"HostConfig.Mounts[{index}].Target", clean_path(target), kind == "bind"))
    for key, what in ((host.get("Tmpfs"), "HostConfig.Tmpfs"), (body.get("Volumes"), "Volumes")):
        if isinstance(key, Mapping):
            for target in key:
                if isinstance(target, str) and target.startswith("/"):
                    found.append((f"{what}[{target!r}]", clean_path(target.split(":", 1)[0]), False))
    return found
