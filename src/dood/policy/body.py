"""The create body as the daemon reads it: strict JSON, then the canonical form of Go's decoding.

The daemon decodes `POST /containers/create` with Go's `encoding/json`: field names match case-insensitively,
a repeated field is silently overwritten (nested objects are even merged), and HostConfig fields given at the
top level are honoured when no `HostConfig` object is sent. So before any rule runs, the body is put in a
canonical form: every key known and spelled as Docker spells it, nothing repeated, nothing unknown. Whoever
forwards the body (dood-proxy) sends that canonical form, so the daemon reads exactly what was checked.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Rules that mean "this body is not well-formed", not "this container is not allowed" (HTTP 400, not 403).
STRUCTURAL_RULES = frozenset({"malformed", "duplicate-key", "unknown-field", "non-ascii-key", "top-level-host-config"})


@dataclass(frozen=True)
class Violation:
    """One reason a create body is refused: which field, which rule, and what to do."""

    field: str
    rule: str
    message: str

    @property
    def structural(self) -> bool:
        """The body is malformed (HTTP 400) rather than not allowed (HTTP 403)."""
        return self.rule in STRUCTURAL_RULES

    def __str__(self) -> str:
        return f"{self.field}: {self.message} [{self.rule}]"


class MalformedBody(ValueError):
    """The create body is not one JSON object without repeated keys."""


# --- JSON with repeated keys refused ---


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise MalformedBody(f"the key {key!r} is given twice in one object")
        seen[key] = value
    return seen


def _no_constants(name: str) -> Any:
    raise MalformedBody(f"{name} is not valid JSON")


def parse_json(raw: bytes | str) -> Any:
    """Strict JSON: a repeated key in any object, NaN or Infinity is a `MalformedBody`."""
    try:
        return json.loads(raw, object_pairs_hook=_no_repeats, parse_constant=_no_constants)
    except MalformedBody:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedBody(f"not valid JSON: {exc}") from None
    except RecursionError:  # a body nested thousands deep: no Docker request is
        raise MalformedBody("nested too deeply to be a Docker request") from None


# --- the create body's schema, as Go decodes it ---
# A struct is a dict of its JSON field names; ("map", child) has free keys; ("list", child) has elements;
# None is a leaf (scalar, list of scalars, or an object Go decodes into struct{} and ignores).
# Field names: moby api/types (container.Config, HostConfig, Resources, mount.Mount, network.EndpointSettings).


def _struct(leaves: str, **children: Any) -> dict[str, Any]:
    return {**dict.fromkeys(leaves.split()), **children}


_MAP = ("map", None)
_THROTTLE = ("list", _struct("Path Rate"))
_ENDPOINT = _struct(
    "Links Aliases GwPriority NetworkID EndpointID Gateway IPAddress IPPrefixLen IPv6Gateway GlobalIPv6Address "
    "GlobalIPv6PrefixLen MacAddress DNSNames",
    IPAMConfig=_struct("IPv4Address IPv6Address LinkLocalIPs"),
    DriverOpts=_MAP,
)
_MOUNT = _struct(
    "Type Source Target ReadOnly Consistency ClusterOptions",
    BindOptions=_struct("Propagation NonRecursive CreateMountpoint ReadOnlyNonRecursive ReadOnlyForceRecursive"),
    VolumeOptions=_struct("NoCopy Subpath", Labels=_MAP, DriverConfig=_struct("Name", Options=_MAP)),
    ImageOptions=_struct("Subpath"),
    TmpfsOptions=_struct("SizeBytes Mode Options"),
)
_RESOURCES = _struct(
    "CpuShares Memory NanoCpus CgroupParent BlkioWeight CpuPeriod CpuQuota CpuRealtimePeriod CpuRealtimeRuntime "
    "CpusetCpus CpusetMems DeviceCgroupRules KernelMemory KernelMemoryTCP MemoryReservation MemorySwap "
    "MemorySwappiness OomKillDisable PidsLimit CpuCount CpuPercent IOMaximumIOps IOMaximumBandwidth",
    BlkioWeightDevice=("list", _struct("Path Weight")),
    BlkioDeviceReadBps=_THROTTLE,
    BlkioDeviceWriteBps=_THROTTLE,
    BlkioDeviceReadIOps=_THROTTLE,
    BlkioDeviceWriteIOps=_THROTTLE,
    Devices=("list", _struct("PathOnHost PathInContainer CgroupPermissions")),
    DeviceRequests=("list", _struct("Driver Count DeviceIDs Capabilities", Options=_MAP)),
    Ulimits=("list", _struct("Name Hard Soft")),
)
_HOST_CONFIG = _struct(
    "Binds ContainerIDFile NetworkMode AutoRemove VolumeDriver VolumesFrom ConsoleSize CapAdd CapDrop Capabilities "
    "CgroupnsMode Dns DnsOptions DnsSearch ExtraHosts GroupAdd IpcMode Cgroup Links OomScoreAdj PidMode Privileged "
    "PublishAllPorts ReadonlyRootfs SecurityOpt UTSMode UsernsMode ShmSize Runtime Isolation MaskedPaths "
    "ReadonlyPaths Init",
    LogConfig=_struct("Type", Config=_MAP),
    PortBindings=("map", ("list", _struct("HostIp HostPort"))),
    RestartPolicy=_struct("Name MaximumRetryCount"),
    Annotations=_MAP,
    StorageOpt=_MAP,
    Tmpfs=_MAP,
    Sysctls=_MAP,
    Mounts=("list", _MOUNT),
    **_RESOURCES,
)
_CONFIG = _struct(
    "Hostname Domainname User AttachStdin AttachStdout AttachStderr ExposedPorts Tty OpenStdin StdinOnce Env Cmd "
    "ArgsEscaped Image Volumes WorkingDir Entrypoint NetworkDisabled MacAddress OnBuild StopSignal StopTimeout Shell",
    Healthcheck=_struct("Test Interval Timeout StartPeriod StartInterval Retries"),
    Labels=_MAP,
)
_CREATE_BODY = {
    **_CONFIG,
    "HostConfig": _HOST_CONFIG,
    "NetworkingConfig": _struct("", EndpointsConfig=("map", _ENDPOINT)),
}
# The daemon's wrapper also embeds a deprecated HostConfig (and `Cpuset`) at the top level, used whole
# when no HostConfig object is sent: a back door around every HostConfig rule, so it is refused.
_TOP_LEVEL_HOST_FIELDS = {name.lower(): name for name in [*_HOST_CONFIG, "Cpuset"] if name not in _CONFIG}


def canonical_create_body(body: Mapping[str, Any]) -> tuple[dict[str, Any], list[Violation]]:
    """The body with every key spelled as Docker spells it, and what keeps it from being well-formed.

    Field names match case-insensitively (ASCII only: a non-ASCII name may fold onto a field in Go and is
    refused); a field given twice under two spellings, an unknown field, or a HostConfig field at the top
    level is reported. Map keys (labels, sysctls, ...) are kept exactly. Null fields are dropped.
    """
    problems: list[Violation] = []
    if not isinstance(body, Mapping):
        return {}, [Violation("<body>", "malformed", "the body must be a JSON object")]
    top = {key: value for key, value in body.items() if not _is_top_level_host_field(key, value, problems)}
    return _canonical(top, _CREATE_BODY, "", problems), problems


def _is_top_level_host_field(key: Any, value: Any, problems: list[Violation]) -> bool:
    name = _TOP_LEVEL_HOST_FIELDS.get(key.lower()) if isinstance(key, str) and key.isascii() else None
    if name is None:
        return False
    if value is not None:
        problems.append(
            Violation(
                key,
                "top-level-host-config",
                f"{name} belongs under HostConfig; the daemon's deprecated top-level HostConfig is refused",
            )
        )
    return True


def _canonical(value: Any, spec: Any, path: str, problems: list[Violation]) -> Any:
    if value is None or spec is None:
        return value
    if isinstance(spec, tuple):
        kind, child = spec
        if kind == "map":
            if not isinstance(value, Mapping):
                problems.append(Violation(path, "malformed", "must be a JSON object"))
                return None
            return {key: _canonical(item, child, f"{path}[{key!r}]", problems) for key, item in value.items()}
        if not isinstance(value, list):
            problems.append(Violation(path, "malformed", "must be a JSON array"))
            return None
        return [_canonical(item, child, f"{path}[{index}]", problems) for index, item in enumerate(value)]
    if not isinstance(value, Mapping):
        problems.append(Violation(path or "<body>", "malformed", "must be a JSON object"))
        return None
    names = {name.lower(): name for name in spec}
    result: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, item in value.items():
        where = f"{path}.{key}" if path else str(key)
        if not isinstance(key, str) or not key.isascii():
            problems.append(Violation(where, "non-ascii-key", "field names must be ASCII (Go folds some letters)"))
            continue
        name = names.get(key.lower())
        if name is None:
            problems.append(Violation(where, "unknown-field", "not a Docker create field dood knows; refused"))
            continue
        if name in spelled:
            problems.append(
                Violation(
                    f"{path}.{name}" if path else name,
                    "duplicate-key",
                    f"given twice (as {spelled[name]!r} and {key!r}); the daemon matches field names "
                    "case-insensitively and would keep only one",
                )
            )
            continue
        spelled[name] = key
        canonical = _canonical(item, spec[name], f"{path}.{name}" if path else name, problems)
        if canonical is not None:  # null asks for nothing; a malformed value is already reported
            result[name] = canonical
    return result
