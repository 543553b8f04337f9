"""The rules: every reason a create body breaks the policy, and the error that lists them for a task.

The operator checks the body it is about to send (every violation listed, before anything is created);
dood-proxy checks every `POST /containers/create` body on the socket itself. Both call the same pure
function, `violations(create_body, policy)`, over the Docker Engine API's create body.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from typing import Any

from dood.exceptions import DoodError
from dood.policy import binds, devices
from dood.policy.body import Violation, canonical_create_body
from dood.policy.model import ESCAPE_CAPABILITIES, Policy, capability_name
from dood.policy.problems import Problems, as_list, is_set

ALLOWED_SECURITY_OPTS = frozenset({"no-new-privileges", "no-new-privileges=true", "no-new-privileges:true"})
ALLOWED_LOG_DRIVERS = frozenset({"", "json-file", "local", "journald", "none"})
#: Never `nvidia`: that runtime hands out the GPUs the environment names (the image's included), around
#: max_gpus. GPUs come only through DeviceRequests, from which the engine sets the NVIDIA_* variables itself.
ALLOWED_RUNTIMES = frozenset({"", "runc", "io.containerd.runc.v2"})
ALLOWED_IPC_MODES = frozenset({"", "private", "shareable", "none"})
#: The only ulimit a container may set (within policy.max_nofile); the others keep the daemon's.
ALLOWED_ULIMITS = frozenset({"nofile"})
_CANONICAL_ID = re.compile(r"^(0|[1-9][0-9]{0,9})$")


def violations(create_body: Mapping[str, Any], policy: Policy) -> list[Violation]:
    """Every reason this `POST /containers/create` body breaks the policy; empty when it may be created.

    Pure and lexical: whether the directories of a bind source can be changed by someone untrusted is
    checked where the host's filesystem is seen (`dood.mounts.source_safety`, by dood-proxy at create and start).
    """
    body, found = canonical_create_body(create_body)
    if any(v.rule == "malformed" and v.field == "<body>" for v in found):
        return found
    host = body.get("HostConfig") or {}
    for rule in (_image, _user, _privileged, _capabilities, _namespaces, devices.devices, _security, _links):
        found.extend(rule(body, host, policy))
    found.extend(binds.binds(host, policy))
    found.extend(binds.mounts(host, policy))
    found.extend(binds.nesting(body, host, policy))
    for rule in (_ports, _resources, _runtime, _networking):
        found.extend(rule(body, host, policy))
    return found


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
    """Who the container is: exactly one of `policy.allowed_users` ('uid:gid', both given: with a uid alone
    the image's /etc/passwd picks the group and its /etc/group adds supplementary ones), and supplementary
    groups only from `policy.allowed_group_add`. An allow-list: uids and gids not named are refused, whoever
    they are (root, dood-proxy's own uid, the Docker socket's group...)."""
    found = Problems()
    for index, group in enumerate(as_list(host.get("GroupAdd"), "HostConfig.GroupAdd", found)):
        if not (isinstance(group, str) and _CANONICAL_ID.fullmatch(group) and int(group) in policy.allowed_group_add):
            found.add(
                f"HostConfig.GroupAdd[{index}]",
                "group",
                f"{group!r} is not in policy.allowed_group_add {list(policy.allowed_group_add)} (numeric group ids; "
                "a supplementary group is access: the Docker socket's group is root on the host)",
            )
    if policy.allow_root_user:
        return found
    user = body.get("User")
    if not (isinstance(user, str) and policy.user_allowed(user) and user in policy.allowed_users):
        found.add(
            "User",
            "user",
            f"{user!r} is not one of policy.allowed_users {list(policy.allowed_users)}: a container runs only as "
            "an identity the policy names, written 'uid:gid' exactly (not a name, not the image's default); set "
            "the task's user or defaults.user to one of them, or add it to policy.allowed_users",
        )
    return found


def _privileged(body: Mapping, host: Mapping, policy: Policy) -> list[Violation]:
    found = Problems()
    if is_set(host.get("Privileged")):
        found.add("HostConfig.Privileged", "privileged", "privileged containers own the host; never allowed")
    if is_set(host.get("Capabilities")):
        found.add("HostConfig.Capabilities", "capability", "replacing the capability set is not allowed")
    if is_set(host.get("OomKillDisable")):
        found.add("HostConfig.OomKillDisable", "oom", "disabling the OOM killer can hang the host")
    score = host.get("OomScoreAdj")
    if isinstance(score, (int, float)) and score < 0:
        found.add("HostConfig.OomScoreAdj", "oom", "a negative OOM score makes the host kill its own processes first")
    return found


def _capabilities(body: Mapping, host: Mapping, policy: Policy) -> list[Violation]:
    found = Problems()
    for index, cap in enumerate(as_list(host.get("CapAdd"), "HostConfig.CapAdd", found, string_ok=True)):
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
    found = Problems()

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
    if is_set(host.get("Cgroup")):
        shared("Cgroup", "another cgroup")
    if is_set(host.get("CgroupParent")):
        found.add("HostConfig.CgroupParent", "cgroup", "placing the container in another cgroup is not allowed")
    return found


def _security(body: Mapping, host: Mapping, policy: Policy) -> list[Violation]:
    found = Problems()
    for index, option in enumerate(as_list(host.get("SecurityOpt"), "HostConfig.SecurityOpt", found)):
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
    if is_set(host.get("Sysctls")):
        found.add("HostConfig.Sysctls", "sysctls", "kernel parameters (sysctls) are not allowed")
    if is_set(host.get("Annotations")):
        found.add("HostConfig.Annotations", "annotations", "OCI runtime annotations are not allowed")
    return found


def _links(body: Mapping, host: Mapping, policy: Policy) -> list[Violation]:
    found = Problems()
    if is_set(host.get("VolumesFrom")):
        found.add("HostConfig.VolumesFrom", "volumes-from", "taking volumes from other containers is not allowed")
    if is_set(host.get("Links")):
        found.add("HostConfig.Links", "links", "links to other containers are not allowed")
    if is_set(host.get("VolumeDriver")):
        found.add("HostConfig.VolumeDriver", "volume-driver", "volume drivers are not allowed")
    return found


def _network_allowed(name: str, policy: Policy) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in policy.allowed_networks)


def _ports(body: Mapping, host: Mapping, policy: Policy) -> list[Violation]:
    found = Problems()
    if is_set(host.get("PublishAllPorts")):
        found.add("HostConfig.PublishAllPorts", "port", "publishing every exposed port is not allowed")
    bindings = host.get("PortBindings") or {}
    if not isinstance(bindings, Mapping):
        return found
    for port, entries in bindings.items():
        for index, entry in enumerate(as_list(entries, f"HostConfig.PortBindings[{port!r}]", found)):
            field = f"HostConfig.PortBindings[{port!r}][{index}]"
            entry = entry if isinstance(entry, Mapping) else {}
            if policy.allowed_host_ports is None:
                found.add(field, "port", "publishing host ports is not allowed (policy.allowed_host_ports is unset)")
                continue
            ip = str(entry.get("HostIp") or "")
            if ip not in policy.allowed_host_ips and not (ip in ("", "::") and "0.0.0.0" in policy.allowed_host_ips):  # noqa: S104
                found.add(f"{field}.HostIp", "port", f"{ip or '0.0.0.0'!r} is not in policy.allowed_host_ips")  # noqa: S104
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
    found = Problems()
    pids = host.get("PidsLimit")
    if pids is not None and (not _is_int(pids) or not 0 < pids <= policy.max_pids):
        found.add(
            "HostConfig.PidsLimit",
            "pids-limit",
            f"{pids!r}: at most policy.max_pids ({policy.max_pids}) processes; 0 and -1 mean unlimited, which one "
            "step could use to fork-bomb the host (leave it unset for the policy's limit)",
        )
    for index, limit in enumerate(as_list(host.get("Ulimits"), "HostConfig.Ulimits", found)):
        field = f"HostConfig.Ulimits[{index}]"
        name = limit.get("Name") if isinstance(limit, Mapping) else None
        if name not in ALLOWED_ULIMITS:
            found.add(field, "ulimit", f"{name!r}: only 'nofile' may be set (the others keep the daemon's limits)")
            continue
        soft, hard = limit.get("Soft"), limit.get("Hard")
        if not (_is_int(soft) and _is_int(hard) and 0 <= soft <= hard <= policy.max_nofile):
            found.add(
                field,
                "ulimit",
                f"nofile soft {soft!r}, hard {hard!r}: need 0 <= soft <= hard <= policy.max_nofile "
                f"({policy.max_nofile})",
            )
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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def apply_defaults(body: dict[str, Any], policy: Policy) -> dict[str, Any]:
    """Give a create body the policy's limits where it sets none (in place; returned): a private cgroup
    namespace, the process limit (policy.max_pids), and the memory limit when policy.default_memory is
    set. Run after `violations` passed: a body that asked for more was refused, one that asked for less
    keeps its own."""
    host = body.setdefault("HostConfig", {})
    if not host.get("CgroupnsMode"):  # dockerd's default on cgroup v1 is the host's cgroup namespace
        host["CgroupnsMode"] = "private"
    if not host.get("PidsLimit"):
        host["PidsLimit"] = policy.max_pids
    if policy.default_memory is not None and not host.get("Memory"):
        host["Memory"] = policy.default_memory
    return body


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
    found = Problems()
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
    found = Problems()
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
        if isinstance(settings, Mapping) and is_set(settings.get("Links")):
            found.add(f"{field}.Links", "links", "links to other containers are not allowed")
    return found


# --- raising, for the operator ---


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


def check(
    create_body: Mapping[str, Any],
    policy: Policy,
    *,
    subject: str = "The container",
) -> None:
    """Raise `PolicyViolation` listing every violation of the body; return when it may be created."""
    found = violations(create_body, policy)
    if found:
        raise PolicyViolation(found, subject)
