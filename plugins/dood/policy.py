"""The container policy: what a launched container may ask of the Docker host, checked in one place.

The operator checks the body it is about to send (every violation listed, before anything is created);
`dood-proxy` checks every `POST /containers/create` body on the socket itself. Both call the same pure
function, `violations(create_body, policy)`, over the Docker Engine API's create body.

The daemon decodes that body with Go's `encoding/json`: field names match case-insensitively, a repeated
field is silently overwritten (nested objects are even merged), and HostConfig fields given at the top
level are honoured when no `HostConfig` object is sent. So before any rule runs, the body is put in a
canonical form: every key known and spelled as Docker spells it, nothing repeated, nothing unknown.
Whoever forwards the body (the proxy) sends that canonical form, so the daemon reads exactly what was
checked.

Importing this module must not import Airflow: the proxy runs without it (`PolicyViolation`, an Airflow
exception, is created on first use).
"""

from __future__ import annotations

import fnmatch
import functools
import json
import os
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dood.resources import parse_size

if TYPE_CHECKING:
    from dood.exceptions import DoodError

# --- fixed rules: no config can loosen these ---

#: Host directories that may be neither mounted nor mounted around (an ancestor exposes them too).
SYSTEM_PATHS: tuple[str, ...] = (
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/root",
    "/run",
    "/var/run",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/var/lib/kubelet",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
)
#: Capabilities that break out of a container or into the kernel: refused even when listed.
ESCAPE_CAPABILITIES = frozenset(
    {
        "ALL",
        "SYS_ADMIN",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_PTRACE",
        "SYS_BOOT",
        "SYS_TIME",
        "DAC_READ_SEARCH",
        "MAC_ADMIN",
        "MAC_OVERRIDE",
        "BPF",
        "PERFMON",
        "SYSLOG",
        "NET_ADMIN",
    }
)
ALLOWED_SECURITY_OPTS = frozenset({"no-new-privileges", "no-new-privileges=true", "no-new-privileges:true"})
ALLOWED_LOG_DRIVERS = frozenset({"", "json-file", "local", "journald", "none"})
#: Never `nvidia`: that runtime hands out the GPUs the environment names (the image's included), around
#: max_gpus. GPUs come only through DeviceRequests, from which the engine sets the NVIDIA_* variables itself.
ALLOWED_RUNTIMES = frozenset({"", "runc", "io.containerd.runc.v2"})
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
ALLOWED_IPC_MODES = frozenset({"", "private", "shareable", "none"})
SHARED_PROPAGATIONS = frozenset({"shared", "rshared", "slave", "rslave"})

#: Rules that mean "this body is not well-formed", not "this container is not allowed" (HTTP 400, not 403).
STRUCTURAL_RULES = frozenset({"malformed", "duplicate-key", "unknown-field", "non-ascii-key", "top-level-host-config"})


# --- the configurable part ---


class Policy(BaseModel):
    """What launched containers may ask of the Docker host (`policy:` in the dood config).

    Everything not listed here is fixed: never privileged, no host namespaces, no devices, no
    seccomp/AppArmor/SELinux opt-outs, no sysctls, no Docker socket, no system paths, no volumes or
    network stacks taken from other containers.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed_images: tuple[str, ...] = Field(
        default=("*",),
        description=(
            "Image patterns, matched part by part (case-sensitive): the name (registry and path) one "
            "'/'-separated component at a time, then the tag, then the digest; '*' never crosses a '/', the "
            "':' before a tag or the '@' before a digest. A pattern or reference without tag or digest means "
            "':latest', as Docker reads it: write 'repo:*' for every tag (and digest) of a repository, "
            "'registry.example.com/ml/*:*' for every tag of every repository directly under ml/. '*' alone "
            "allows every image. Registry logins (POST /auth) go only to registries named here without a "
            "wildcard."
        ),
        examples=[["registry.example.com/ml/*:*", "dood-ml-example:*"]],
    )
    allowed_host_roots: tuple[str, ...] = Field(
        default=("/tmp/dood", "/tmp/dood-runs"),
        description=(
            "Host directories (after the mount map) under which bind-mount sources must lie. The defaults "
            "are the project's default data and run directories; list your own. A root may not be or "
            "contain a system path (/, /etc, /var/run, /var/lib/docker, ...)."
        ),
        examples=[["/srv/ml", "/tmp/dood"]],
    )
    read_only_host_roots: tuple[str, ...] = Field(
        default=(),
        description="Host directories whose bind mounts must be read-only (e.g. the raw data). "
        "Each must lie under an allowed root.",
        examples=[["/srv/ml/data"]],
    )
    resolve_symlinks: bool = Field(
        default=False,
        description=(
            "Deprecated and ignored: dood-proxy now checks every directory of a bind source (no symlink, "
            "trusted owner, not writable by others) at create and again at start (docs/security.md)."
        ),
    )
    allow_root_user: bool = Field(
        default=False,
        description=(
            "Whether a container may run as root (uid 0, a user name, or the image's default user). Off: "
            "`User` must be a numeric, non-root 'uid' or 'uid:gid' (defaults.user gives one), so a container "
            "cannot change directories owned by root, which is what keeps bind sources unsteerable."
        ),
    )
    allowed_volumes: tuple[str, ...] = Field(
        default=(),
        description=(
            "Glob patterns of named volumes a container may mount. Anonymous volumes are always allowed; a "
            "named one may be another workload's data (a database's, Airflow's secrets), so none by default."
        ),
        examples=[["ml-cache", "dood-*"]],
    )
    allowed_networks: tuple[str, ...] = Field(
        default=("default", "bridge", "none"),
        description=(
            "Glob patterns of networks a container may join (NetworkMode and NetworkingConfig). A user-defined "
            "network may reach other workloads (a database, the socket proxy); list the one in "
            "defaults.network. 'host' and 'container:...' are never allowed."
        ),
        examples=[["bridge", "dood-net"]],
    )
    allowed_capabilities: tuple[str, ...] = Field(
        default=(),
        description="Linux capabilities a container may add (CapAdd), e.g. NET_BIND_SERVICE. "
        f"Never allowed, even if listed: {', '.join(sorted(ESCAPE_CAPABILITIES))}.",
        examples=[["NET_BIND_SERVICE"]],
    )
    allow_gpus: bool = Field(
        default=False,
        description=(
            "Whether containers may request GPUs: only by DeviceRequests with the gpu capability (never the "
            "nvidia runtime, never NVIDIA_* variables in Env)."
        ),
    )
    max_gpus: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Most GPUs one container may request, over all its DeviceRequests (DeviceIDs counted one by one); "
            "'all' (Count -1) is over any limit. None means no limit ('all' too)."
        ),
    )
    max_cpus: float | None = Field(
        default=None,
        gt=0,
        description="Most CPUs (NanoCpus, or CpuQuota/CpuPeriod) per container; when set, a limit is required.",
    )
    max_memory: int | None = Field(
        default=None,
        description="Most memory per container, bytes or '16g'; when set, a limit is required.",
        examples=["16g"],
    )
    allowed_host_ports: tuple[int, int] | None = Field(
        default=None,
        description="Inclusive range [first, last] of host ports containers may publish; none means no "
        "published ports at all (PublishAllPorts is always refused).",
        examples=[[8800, 8899]],
    )
    allowed_host_ips: tuple[str, ...] = Field(
        default=("127.0.0.1",),
        description="Host addresses a published port may bind to ('0.0.0.0' or '' is every interface).",
    )

    @field_validator("max_memory", mode="before")
    @classmethod
    def _memory(cls, value: int | str | None) -> int | None:
        return parse_size(value)

    @field_validator("allowed_images")
    @classmethod
    def _patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not pattern.strip() for pattern in value):
            raise ValueError("patterns must be non-empty")
        return value

    @field_validator("allowed_host_roots", "read_only_host_roots")
    @classmethod
    def _roots(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        roots = []
        for root in value:
            if not root.startswith("/"):
                raise ValueError(f"{root!r} must be an absolute host path")
            clean = clean_path(root)
            system = system_path_conflict(clean)
            if system:
                raise ValueError(f"{root!r} is or contains the system path {system}; list narrower directories")
            roots.append(clean)
        return tuple(roots)

    @field_validator("allowed_capabilities")
    @classmethod
    def _capabilities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        names = tuple(capability_name(cap) for cap in value)
        refused = sorted(set(names) & ESCAPE_CAPABILITIES)
        if refused:
            raise ValueError(f"{refused} can escape the container and are never allowed")
        return names

    @field_validator("allowed_host_ports")
    @classmethod
    def _ports(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and not 1 <= value[0] <= value[1] <= 65535:
            raise ValueError("must be [first, last] with 1 <= first <= last <= 65535")
        return value

    @model_validator(mode="after")
    def _read_only_inside_allowed(self) -> Policy:
        outside = [root for root in self.read_only_host_roots if not _under_any(root, self.allowed_host_roots)]
        if outside:
            raise ValueError(f"read_only_host_roots {outside} lie outside allowed_host_roots")
        return self

    def image_allowed(self, reference: str) -> bool:
        """Whether an image reference matches an allowed pattern, part by part (see `allowed_images`)."""
        if ANY_IMAGE in self.allowed_images:
            return True
        image = ImageReference.parse(reference)
        return image is not None and any(
            image.matches(pattern) for pattern in map(ImageReference.parse, self.allowed_images) if pattern is not None
        )

    def login_registries(self) -> frozenset[str]:
        """Registry hosts (lower case) that a pattern names without a wildcard: the only ones to log in to."""
        patterns = (ImageReference.parse(pattern) for pattern in self.allowed_images)
        hosts = {pattern.registry.lower() for pattern in patterns if pattern is not None and pattern.registry}
        return frozenset(host for host in hosts if not _GLOB.search(host))


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


# --- image references, and patterns of them ---

ANY_IMAGE = "*"  # as a whole pattern: every image (the default)
_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class ImageReference:
    """An image reference (or a pattern of one) in Docker's parts: name (registry and path), tag, digest."""

    name: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, text: str) -> ImageReference | None:
        """Split as Docker does: the digest after '@', the tag after a ':' past the last '/'; None if unreadable."""
        name, at, digest = text.partition("@")
        colon = name.rfind(":")
        tag = None
        if colon > name.rfind("/"):
            name, tag = name[:colon], name[colon + 1 :]
        if not name or "@" in digest or (at and not digest) or tag == "":
            return None
        return cls(name, tag, digest if at else None)

    @property
    def registry(self) -> str | None:
        """The registry host[:port] when the name starts with one (a '.', a ':' or 'localhost', as Docker reads)."""
        first, slash, _ = self.name.partition("/")
        return first if slash and ("." in first or ":" in first or first == "localhost") else None

    def matches(self, pattern: ImageReference) -> bool:
        """Whether this reference is one the pattern allows; each part is globbed on its own.

        No tag and no digest means ':latest' on either side. A pattern with a digest allows that digest (the
        engine ignores a tag given with one). A reference by digest may be any image of its repository, so only
        a pattern allowing every tag (':*') covers it.
        """
        names, wanted = self.name.split("/"), pattern.name.split("/")
        if len(names) != len(wanted) or not all(map(fnmatch.fnmatchcase, names, wanted)):
            return False
        if pattern.digest is not None:
            return self.digest is not None and fnmatch.fnmatchcase(self.digest, pattern.digest)
        if self.digest is not None:
            return pattern.tag == "*"
        return fnmatch.fnmatchcase(self.tag or "latest", pattern.tag or "latest")


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


# --- paths ---


def clean_path(path: str) -> str:
    """Lexically clean an absolute path ('..', '.', repeated slashes), as the kernel would walk it."""
    return "/" + posixpath.normpath("/" + path).lstrip("/") if path else path


def _under(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root.rstrip("/") + "/")


def _under_any(path: str, roots: Iterable[str]) -> bool:
    return any(_under(path, root) for root in roots)


def system_path_conflict(path: str) -> str | None:
    """The system path that `path` is, lies under, or contains; None when it is clear of them all."""
    if path == "/":
        return "/"
    for system in SYSTEM_PATHS:
        if _under(path, system) or _under(system, path):
            return system
    return None


def _socket_like(path: str) -> bool:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name.endswith(".sock") or "docker.sock" in path


def capability_name(cap: str) -> str:
    """`cap_sys_admin`, `CAP_SYS_ADMIN` and `SYS_ADMIN` are one capability."""
    name = str(cap).strip().upper()
    return name[4:] if name.startswith("CAP_") else name


# --- the rules ---


def violations(create_body: Mapping[str, Any], policy: Policy) -> list[Violation]:
    """Every reason this `POST /containers/create` body breaks the policy; empty when it may be created.

    Pure and lexical: whether the directories of a bind source can be changed by someone untrusted is
    checked where the host's filesystem is seen (`dood.hostpaths`, by dood-proxy at create and start).
    """
    body, found = canonical_create_body(create_body)
    if any(v.rule == "malformed" and v.field == "<body>" for v in found):
        return found
    host = body.get("HostConfig") or {}
    for rule in (_image, _user, _privileged, _capabilities, _namespaces, _devices, _security, _links):
        found.extend(rule(body, host, policy))
    found.extend(_binds(host, policy))
    found.extend(_mounts(host, policy))
    for rule in (_ports, _resources, _runtime, _networking):
        found.extend(rule(body, host, policy))
    return found


class _Problems(list):
    def add(self, field: str, rule: str, message: str) -> None:
        self.append(Violation(field, rule, message))


def _as_list(value: Any, field: str, found: _Problems, *, string_ok: bool = False) -> list[Any]:
    if value is None:
        return []
    if string_ok and isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return value
    found.add(field, "malformed", "must be a JSON array")
    return []


def _set(value: Any) -> bool:
    """Whether a field asks for something (Go's zero values and null ask for nothing)."""
    return value not in (None, False, 0, "", [], {})


def _image(body: Mapping, host: Mapping, policy: Policy) -> list[Violation]:
    image = body.get("Image")
    if not isinstance(image, str) or not image:
        return [Violation("Image", "image", "an image reference is required")]
    if not policy.image_allowed(image):
        return [
            Violation(
                "Image",
                "image",
                f"{image!r} matches none of policy.allowed_images {list(policy.allowed_images)}",
            )
        ]
    return []


def _user(body: Mapping, host: Mapping, policy: Policy) -> list[Violation]:
    if policy.allow_root_user:
        return []
    user = body.get("User")
    uid, _, gid = str(user or "").partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        return [
            Violation(
                "User",
                "user",
                f"{user!r}: containers must run as a numeric non-root 'uid' or 'uid:gid' (a name or the image's "
                "default may be root); set the task's user or defaults.user, or policy.allow_root_user",
            )
        ]
    if int(uid) == 0:
        return [Violation("User", "user", "running as root (uid 0) is not allowed (policy.allow_root_user)")]
    return []


def _privileged(body: Mapping, host: Mapping, policy: Policy) -> list[Violation]:
    found = _Problems()
    if _set(host.get("Privileged")):
        found.add("HostConfig.Privileged", "privileged", "privileged containers own the host; never allowed")
    if _set(host.get("Capabilities")):
        found.add("HostConfig.Capabilities", "capability", "replacing the capability set is not allowed")
    if _set(host.get("OomKillDisable")):
        found.add("HostConfig.OomKillDisable", "oom", "disabling the OOM killer can hang the host")
    score = host.get("OomScoreAdj")
    if isinstance(score, (int, float)) and score < 0:
        found.add("HostConfig.OomScoreAdj", "oom", "a negative OOM score makes the host kill its own processes first")
    return found


def _capabilities(body: Mapping, host: Mapping, policy: Policy) -> list[Violation]:
    found = _Problems()
    for index, cap in enumerate(_as_list(host.get("CapAdd"), "HostConfig.CapAdd", found, string_ok=True)):
        name = capability_name(cap)
        if name in ESCAPE_CAPABILITIES:
            found.add(f"HostConfig.CapAdd[{index}]", "capability", f"{name} can escape the container; never allowed")
        elif name not in policy.allowed_capabilities:
            found.add(
                f"HostConfig.CapAdd[{index}]",
                "capability",
                f"{name} is not in policy.allowed_capabilities {list(policy.allowed_capabilities)}",
            )
    return found


def _namespaces(body: Mapping, host: Mapping, policy: Policy) -> list[Violation]:
    found = _Problems()

    def mode(field: str) -> str:
        value = host.get(field)
        return value.strip().lower() if isinstance(value, str) else ("" if value is None else "?")

    def shared(field: str, what: str) -> None:
        found.add(f"HostConfig.{field}", "host-namespace", f"{host.get(field)!r}: sharing {what} is not allowed")

    if mode("PidMode") not in ("", "private"):
        shared("PidMode", "the host's or another container's processes")
    if mode("IpcMode") not in ALLOWED_IPC_MODES:
        shared("IpcMode", "the host's or another container's IPC")
    if mode("UTSMode") not in ("", "private"):
        shared("UTSMode", "the host's hostname")
    if mode("UsernsMode") not in ("", "private"):
        shared("UsernsMode", "the host's user namespace")
    if mode("CgroupnsMode") not in ("", "private"):
        shared("CgroupnsMode", "the host's cgroup namespace")
    network = mode("NetworkMode")
    if network == "host" or network.startswith("container:") or network == "?":
        shared("NetworkMode", "the host's or another container's network stack")
    if _set(host.get("Cgroup")):
        shared("Cgroup", "another cgroup")
    if _set(host.get("CgroupParent")):
        found.add("HostConfig.CgroupParent", "cgroup", "placing the container in another cgroup is not allowed")
    return found


def _devices(body: Mapping, host: Mapping, policy: Policy) -> list[Violation]:
    found = _Problems()
    for index, _ in enumerate(_as_list(host.get("Devices"), "HostConfig.Devices", found)):
        found.add(f"HostConfig.Devices[{index}]", "device", "host devices are not allowed")
    for index, _ in enumerate(_as_list(host.get("DeviceCgroupRules"), "HostConfig.DeviceCgroupRules", found)):
        found.add(f"HostConfig.DeviceCgroupRules[{index}]", "device", "device cgroup rules are not allowed")
    for name in BLKIO_DEVICE_FIELDS:
        if _set(host.get(name)):
            found.add(
                f"HostConfig.{name}",
                "device",
                f"{name} names host device paths (the daemon's errors tell which exist); not allowed",
            )
    _gpu_requests(host, policy, found)
    for index, entry in enumerate(_as_list(body.get("Env"), "Env", found)):
        name = entry.partition("=")[0] if isinstance(entry, str) else ""
        if name.startswith(GPU_ENV_PREFIX):
            found.add(
                f"Env[{index}]",
                "gpu",
                f"{name}: {GPU_ENV_PREFIX}* variables choose the host's GPUs and driver features; the engine sets "
                "them from DeviceRequests, the only way to ask for GPUs",
            )
    return found


def _gpu_requests(host: Mapping, policy: Policy, found: _Problems) -> None:
    total: int | None = 0
    for index, request in enumerate(_as_list(host.get("DeviceRequests"), "HostConfig.DeviceRequests", found)):
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


def _security(body: Mapping, host: Mapping, policy: Policy) -> list[Violation]:
    found = _Problems()
    for index, option in enumerate(_as_list(host.get("SecurityOpt"), "HostConfig.SecurityOpt", found)):
        if not isinstance(option, str) or option.strip().lower() not in ALLOWED_SECURITY_OPTS:
            found.add(
                f"HostConfig.SecurityOpt[{index}]",
                "security-opt",
                f"{option!r}: only no-new-privileges is allowed (no seccomp/AppArmor/SELinux changes)",
            )
    for field in ("MaskedPaths", "ReadonlyPaths"):
        if host.get(field) is not None:
            found.add(
                f"HostConfig.{field}", "masked-paths", "overriding the masked /proc and /sys paths is not allowed"
            )
    if _set(host.get("Sysctls")):
        found.add("HostConfig.Sysctls", "sysctls", "kernel parameters (sysctls) are not allowed")
    if _set(host.get("Annotations")):
        found.add("HostConfig.Annotations", "annotations", "OCI runtime annotations are not allowed")
    return found


def _links(body: Mapping, host: Mapping, policy: Policy) -> list[Violation]:
    found = _Problems()
    if _set(host.get("VolumesFrom")):
        found.add("HostConfig.VolumesFrom", "volumes-from", "taking volumes from other containers is not allowed")
    if _set(host.get("Links")):
        found.add("HostConfig.Links", "links", "links to other containers are not allowed")
    if _set(host.get("VolumeDriver")):
        found.add("HostConfig.VolumeDriver", "volume-driver", "volume drivers are not allowed")
    return found


def _bind_source(source: Any, field: str, read_only: bool, policy: Policy, found: _Problems) -> None:
    if not isinstance(source, str) or not source.startswith("/"):
        found.add(field, "bind-source", f"{source!r}: a bind source must be an absolute host path")
        return
    path, shown = clean_path(source), repr(source)
    if _socket_like(path):
        found.add(field, "docker-socket", f"{shown}: mounting a socket (the Docker socket) is never allowed")
        return
    system = system_path_conflict(path)
    if system:
        found.add(field, "system-path", f"{shown} is or contains the system path {system}; never allowed")
        return
    if not _under_any(path, policy.allowed_host_roots):
        found.add(field, "bind-root", f"{shown} is outside policy.allowed_host_roots {list(policy.allowed_host_roots)}")
        return
    if not read_only and _under_any(path, policy.read_only_host_roots):
        found.add(field, "bind-read-only", f"{shown} lies under a read-only root; mount it read-only")


def _binds(host: Mapping, policy: Policy) -> list[Violation]:
    found = _Problems()
    for index, bind in enumerate(_as_list(host.get("Binds"), "HostConfig.Binds", found)):
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
        options = {opt.strip().lower() for opt in (parts[2] if len(parts) == 3 else "").split(",")}
        if options & SHARED_PROPAGATIONS:
            found.add(field, "propagation", "shared or slave mount propagation is not allowed")
        _bind_source(parts[0], field, "ro" in options, policy, found)
    return found


def _mounts(host: Mapping, policy: Policy) -> list[Violation]:
    found = _Problems()
    for index, mount in enumerate(_as_list(host.get("Mounts"), "HostConfig.Mounts", found)):
        field = f"HostConfig.Mounts[{index}]"
        if not isinstance(mount, Mapping):
            found.add(field, "malformed", "must be a JSON object")
            continue
        kind = mount.get("Type") or "volume"
        if kind == "bind":
            propagation = (mount.get("BindOptions") or {}).get("Propagation")
            if isinstance(propagation, str) and propagation.lower() in SHARED_PROPAGATIONS:
                found.add(
                    f"{field}.BindOptions.Propagation", "propagation", "shared or slave propagation is not allowed"
                )
            _bind_source(mount.get("Source"), f"{field}.Source", bool(mount.get("ReadOnly")), policy, found)
        elif kind == "volume":
            if _set(mount.get("Source")):
                _named_volume(mount.get("Source"), f"{field}.Source", policy, found)
            driver = (mount.get("VolumeOptions") or {}).get("DriverConfig")
            if _set(driver):
                found.add(
                    f"{field}.VolumeOptions.DriverConfig",
                    "volume-driver",
                    "volume driver options are not allowed (they can bind any host path)",
                )
        elif kind != "tmpfs":
            found.add(f"{field}.Type", "mount-type", f"{kind!r}: only bind, volume and tmpfs mounts are allowed")
    return found


def _named_volume(name: Any, field: str, policy: Policy, found: _Problems) -> None:
    if not isinstance(name, str) or not any(fnmatch.fnmatchcase(name, p) for p in policy.allowed_volumes):
        found.add(field, "named-volume", f"named volume {name!r} is not in policy.allowed_volumes")


def _network_allowed(name: str, policy: Policy) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in policy.allowed_networks)


def _ports(body: Mapping, host: Mapping, policy: Policy) -> list[Violation]:
    found = _Problems()
    if _set(host.get("PublishAllPorts")):
        found.add("HostConfig.PublishAllPorts", "port", "publishing every exposed port is not allowed")
    bindings = host.get("PortBindings") or {}
    if not isinstance(bindings, Mapping):
        return found
    for port, entries in bindings.items():
        for index, entry in enumerate(_as_list(entries, f"HostConfig.PortBindings[{port!r}]", found)):
            field = f"HostConfig.PortBindings[{port!r}][{index}]"
            entry = entry if isinstance(entry, Mapping) else {}
            if policy.allowed_host_ports is None:
                found.add(field, "port", "publishing host ports is not allowed (policy.allowed_host_ports is unset)")
                continue
            ip = str(entry.get("HostIp") or "")
            if ip not in policy.allowed_host_ips and not (ip in ("", "::") and "0.0.0.0" in policy.allowed_host_ips):
                found.add(f"{field}.HostIp", "port", f"{ip or '0.0.0.0'!r} is not in policy.allowed_host_ips")
            first, last = _port_range(entry.get("HostPort"))
            low, high = policy.allowed_host_ports
            if first is None or not low <= first <= last <= high:
                found.add(
                    f"{field}.HostPort",
                    "port",
                    f"{entry.get('HostPort')!r} is outside policy.allowed_host_ports [{low}, {high}]",
                )
    return found


def _port_range(value: Any) -> tuple[int | None, int]:
    text = str(value or "").strip()
    try:
        first, _, last = text.partition("-")
        return int(first), int(last or first)
    except ValueError:
        return None, 0  # empty: the daemon picks a random port, outside any range we can promise


def _resources(body: Mapping, host: Mapping, policy: Policy) -> list[Violation]:
    found = _Problems()
    if policy.max_cpus is not None:
        cpus = _cpus(host)
        if cpus is None:
            found.add(
                "HostConfig.NanoCpus", "cpu-limit", f"a CPU limit is required (policy.max_cpus is {policy.max_cpus})"
            )
        elif cpus > policy.max_cpus:
            found.add("HostConfig.NanoCpus", "cpu-limit", f"{cpus:g} CPUs exceeds policy.max_cpus {policy.max_cpus:g}")
    if policy.max_memory is not None:
        memory = host.get("Memory")
        if not isinstance(memory, int) or memory <= 0:
            found.add(
                "HostConfig.Memory",
                "memory-limit",
                f"a memory limit is required (policy.max_memory is {policy.max_memory})",
            )
        elif memory > policy.max_memory:
            found.add(
                "HostConfig.Memory", "memory-limit", f"{memory} bytes exceeds policy.max_memory {policy.max_memory}"
            )
    return found


def _cpus(host: Mapping) -> float | None:
    nano = host.get("NanoCpus")
    if isinstance(nano, (int, float)) and nano > 0:
        return nano / 1e9
    quota = host.get("CpuQuota")
    if isinstance(quota, (int, float)) and quota > 0:
        period = host.get("CpuPeriod")
        return quota / (period if isinstance(period, (int, float)) and period > 0 else 100_000)
    return None


def _runtime(body: Mapping, host: Mapping, policy: Policy) -> list[Violation]:
    found = _Problems()
    runtime = host.get("Runtime") or ""
    if runtime not in ALLOWED_RUNTIMES:
        found.add(
            "HostConfig.Runtime",
            "runtime",
            f"{runtime!r} is not an allowed runtime ({sorted(ALLOWED_RUNTIMES - {''})}); GPUs are asked for with "
            "DeviceRequests (policy.allow_gpus), never with a runtime",
        )
    log_config = host.get("LogConfig") or {}
    driver = (log_config.get("Type") or "") if isinstance(log_config, Mapping) else "?"
    if driver not in ALLOWED_LOG_DRIVERS:
        found.add(
            "HostConfig.LogConfig.Type",
            "log-driver",
            f"{driver!r}: only local log drivers ({', '.join(sorted(ALLOWED_LOG_DRIVERS - {''}))}) are allowed; "
            "others make the daemon connect where the body says",
        )
    return found


def _networking(body: Mapping, host: Mapping, policy: Policy) -> list[Violation]:
    found = _Problems()
    mode = host.get("NetworkMode")
    if isinstance(mode, str) and mode and mode.lower() != "host" and not mode.lower().startswith("container:"):
        if not _network_allowed(mode, policy):
            found.add("HostConfig.NetworkMode", "network", f"network {mode!r} is not in policy.allowed_networks")
    endpoints = (body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
    if not isinstance(endpoints, Mapping):
        return found
    for network, settings in endpoints.items():
        field = f"NetworkingConfig.EndpointsConfig[{network!r}]"
        if network.strip().lower() == "host" or network.strip().lower().startswith("container:"):
            found.add(field, "host-namespace", "joining the host's or another container's network is not allowed")
        elif not _network_allowed(network, policy):
            found.add(field, "network", f"network {network!r} is not in policy.allowed_networks")
        if isinstance(settings, Mapping) and _set(settings.get("Links")):
            found.add(f"{field}.Links", "links", "links to other containers are not allowed")
    return found


# --- raising, for the operator ---


@functools.cache
def _policy_violation_type() -> type[DoodError]:
    from dood.exceptions import DoodError

    class PolicyViolation(DoodError):
        """The container the task asked for breaks the dood policy; nothing was created."""

        def __init__(self, found: Iterable[Violation], subject: str = "The container") -> None:
            self.violations = list(found)
            listing = "\n".join(f"  - {v}" for v in self.violations)
            super().__init__(
                f"{subject} breaks the dood policy ({len(self.violations)} "
                f"violation{'s' if len(self.violations) != 1 else ''}):\n{listing}\n"
                "Change the task, or (if it is safe) the `policy:` section of the dood config."
            )

        def __reduce__(self):
            return (self.__class__, (self.violations,))

    PolicyViolation.__module__ = __name__
    PolicyViolation.__qualname__ = "PolicyViolation"
    return PolicyViolation


def __getattr__(name: str) -> Any:
    if name == "PolicyViolation":  # an Airflow exception: created on first use, not at import
        return _policy_violation_type()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check(
    create_body: Mapping[str, Any],
    policy: Policy,
    *,
    subject: str = "The container",
) -> None:
    """Raise `PolicyViolation` listing every violation of the body; return when it may be created."""
    found = violations(create_body, policy)
    if found:
        raise _policy_violation_type()(found, subject)


# --- loading, for processes that do not load the whole dood config (the proxy) ---


def parse_policy(data: object, source: str = "<dict>") -> Policy:
    """Validate the `policy:` section; the error names each bad field's path."""
    try:
        return Policy.model_validate(data or {})
    except ValidationError as exc:
        problems = "\n".join(
            f"  - policy.{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise ValueError(f"Invalid dood policy in {source}:\n{problems}") from None


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """The `policy:` section of a dood config file (`${VAR}` expanded); the defaults when it has none."""
    resolved = Path(path)
    try:
        data = yaml.safe_load(os.path.expandvars(resolved.read_text(encoding="utf-8"))) or {}
    except OSError as exc:
        raise ValueError(f"Cannot read the dood config {resolved}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"Invalid dood config {resolved}: not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"Invalid dood config {resolved}: expected a mapping at the top")
    return parse_policy(data.get("policy"), source=str(resolved))
