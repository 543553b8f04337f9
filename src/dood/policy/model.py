"""The typed policy (`policy:` in the dood config): what a launched container may ask of the Docker host."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dood.policy.images import ANY_IMAGE, ImageReference, is_pattern
from dood.policy.paths import clean_path, system_path_conflict, under_any
from dood.policy.sizes import parse_size

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


_USER = re.compile(r"^([0-9]{1,10}):([0-9]{1,10})$")
#: The largest uid or gid the kernel has (2^32 - 2; 2^32 - 1 is "no id").
MAX_ID = 2**32 - 2


def parse_user(user: object) -> tuple[int, int] | None:
    """`(uid, gid)` of a numeric `uid:gid` within the kernel's range; None for anything else."""
    match = _USER.fullmatch(user) if isinstance(user, str) else None
    if match is None:
        return None
    uid, gid = int(match.group(1)), int(match.group(2))
    return (uid, gid) if uid <= MAX_ID and gid <= MAX_ID else None


def capability_name(cap: str) -> str:
    """`cap_sys_admin`, `CAP_SYS_ADMIN` and `SYS_ADMIN` are one capability."""
    name = str(cap).strip().upper()
    return name[4:] if name.startswith("CAP_") else name


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
        default=("/tmp/dood", "/tmp/dood-runs"),  # noqa: S108 - the defaults of config.py's roots
        description=(
            "Host directories (after the mount map) under which bind-mount sources must lie. The defaults "
            "are the project's default data and run directories; list your own. A root may not be or "
            "contain a system path (/, /etc, /var/run, /var/lib/docker, ...)."
        ),
        examples=[["/srv/ml", "/tmp/dood"]],  # noqa: S108 - an example
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
    allowed_users: tuple[str, ...] = Field(
        default=("50000:0",),
        description=(
            "The identities ('uid:gid', both numeric) a container may run as: an allow-list, never a deny-list. "
            "The default is the Airflow image's user (50000:0), what steps ran as before; a config that sets "
            "defaults.user and not this key allows that user instead. Never uid 0 (unless allow_root_user); "
            "dood-proxy also refuses, at start and at every create, a uid it trusts as an owner of bind "
            "sources' directories (root, its own uid) and a gid it holds (its groups: the Docker socket's)."
        ),
        examples=[["50000:0", "1000:1000"]],
    )
    allowed_group_add: tuple[int, ...] = Field(
        default=(),
        description=(
            "Supplementary group ids a container may be given (HostConfig.GroupAdd, numeric only). None by "
            "default: a supplementary group is access (the Docker socket's group is root on the host)."
        ),
        examples=[[2000]],
    )
    max_pids: int = Field(
        default=4096,
        ge=1,
        description=(
            "Most processes per container (HostConfig.PidsLimit). A create without a limit gets this one "
            "(dood-proxy and the operator set it); an unlimited one (0, -1) or a larger one is refused: one "
            "step must not fork-bomb the host."
        ),
    )
    max_nofile: int = Field(
        default=1048576,
        ge=64,
        description=(
            "Highest open-files limit (HostConfig.Ulimits 'nofile', soft and hard) a container may ask for. "
            "Other ulimits are refused (none raises what the daemon gives)."
        ),
    )
    default_memory: int | None = Field(
        default=None,
        description=(
            "Memory limit (bytes or '8g') given to a container that asks for none (dood-proxy and the operator "
            "set it). None: no default; set it (or max_memory) on shared hosts so one step cannot starve the "
            "host."
        ),
        examples=["8g"],
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
    gpu_probe_images: tuple[str, ...] = Field(
        default=("nvidia/cuda:12.4.1-base-ubuntu22.04",),
        description=(
            "Images GPU discovery's probe (`gpus.probe_image`) may run with every GPU through dood-proxy, exactly "
            "as the probe asks (the driver's nvidia-smi query; no Env, no mounts). Exact references, no patterns: "
            "the probe runs the image's own libraries with all GPUs, so only images you trust belong here. Empty: "
            "no probe passes (list gpus.devices instead)."
        ),
        examples=[["nvidia/cuda:12.4.1-base-ubuntu22.04"]],
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

    @field_validator("max_memory", "default_memory", mode="before")
    @classmethod
    def _memory(cls, value: int | str | None) -> int | None:
        return parse_size(value)

    @field_validator("allowed_users")
    @classmethod
    def _users(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        users = []
        for user in value:
            owner = parse_user(user)
            if owner is None:
                raise ValueError(f"{user!r} must be a numeric 'uid:gid' (both parts: an image may choose the group)")
            users.append(f"{owner[0]}:{owner[1]}")
        if not users:
            raise ValueError("at least one identity is needed (e.g. '50000:0')")
        return tuple(users)

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
    def _no_root_identity(self) -> Policy:
        root = [user for user in self.allowed_users if user.split(":")[0] == "0"]
        if root and not self.allow_root_user:
            raise ValueError(f"allowed_users {root}: uid 0 is root; only with allow_root_user (docs/security.md)")
        if self.default_memory is not None and self.max_memory is not None and self.default_memory > self.max_memory:
            raise ValueError(f"default_memory {self.default_memory} exceeds max_memory {self.max_memory}")
        return self

    @model_validator(mode="after")
    def _read_only_inside_allowed(self) -> Policy:
        outside = [root for root in self.read_only_host_roots if not under_any(root, self.allowed_host_roots)]
        if outside:
            raise ValueError(f"read_only_host_roots {outside} lie outside allowed_host_roots")
        return self

    def user_allowed(self, user: object) -> bool:
        """Whether `user` (a create body's `User`, a directory's owner) is exactly one of `allowed_users`."""
        owner = parse_user(user)
        return owner is not None and f"{owner[0]}:{owner[1]}" in self.allowed_users

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
        return frozenset(host for host in hosts if not is_pattern(host))
