"""Generated `POST /containers/create` bodies and the invariants a created container must satisfy.

Shared by the differential fuzz test through dood-proxy on the real engine
(tests/integration/test_proxy_fuzz.py: every body the proxy allows is created, and the daemon's own inspect
must satisfy `broken_invariants`) and its fast, Docker-free variant (tests/unit/policy/test_rules_fuzz.py: every
body `dood.policy.violations` allows, read as the daemon reads the canonical form, must satisfy them too).

Bodies are raw JSON text, so a key can repeat and be spelled in any case (Go's decoder matches field names
case-insensitively and keeps the last of a repeated one). They are mostly near-valid, mutated with hostile
fields. Host paths are written with placeholders (`@DATA@`, the allowed root; `@NONCE@`, this run's label;
`@SOCKGID@`, the Docker socket's group) so a body can be kept in the corpus and replayed on any machine.
"""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

DATA = "@DATA@"
NONCE = "@NONCE@"
SOCKGID = "@SOCKGID@"
#: A label every generated body carries (outside dood.*): the run's containers are found by it afterwards.
NONCE_LABEL = "fuzz.nonce"

IDENTITY_LABELS = frozenset({"dood.dag_id", "dood.task_id", "dood.run_id", "dood.map_index", "dood.try_number"})
NO_NEW_PRIVILEGES = frozenset({"no-new-privileges", "no-new-privileges=true", "no-new-privileges:true"})
SHARED_PROPAGATIONS = frozenset({"shared", "rshared", "slave", "rslave"})
RUNC = frozenset({"runc", "io.containerd.runc.v2"})
#: The invariants' own list (deliberately not dood.policy's): no mount may be, lie under or contain these.
SYSTEM_PATHS = (
    "/etc", "/proc", "/sys", "/dev", "/boot", "/root", "/run", "/var/run", "/var/lib/docker",
    "/var/lib/containerd", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
)  # fmt: skip


# --- the policy the fuzz runs under, and where its placeholders point ---


@dataclass(frozen=True)
class FuzzPolicy:
    """The policy under test, in the invariants' own terms (the yaml is generated from it)."""

    data: str  # the allowed root (what @DATA@ stands for)
    stack: str = "fuzz"
    sock_gid: int = 0
    allowed_users: tuple[str, ...] = ("50000:0", "1000:1000")
    allowed_group_add: tuple[int, ...] = (2000,)
    allowed_capabilities: tuple[str, ...] = ("NET_BIND_SERVICE",)
    allowed_host_ports: tuple[int, int] = (18000, 18099)
    allowed_volumes: tuple[str, ...] = ("dood-fuzz-vol*",)
    allowed_networks: tuple[str, ...] = ("default", "bridge", "none")
    max_pids: int = 1024
    max_nofile: int = 4096
    image_pattern: str = "dood-test-busybox:*"

    @property
    def read_only_root(self) -> str:
        return f"{self.data}/ro"

    def yaml(self) -> str:
        return (
            f"  allowed_host_roots: ['{self.data}']\n"
            f"  read_only_host_roots: ['{self.read_only_root}']\n"
            f"  allowed_users: {json.dumps(list(self.allowed_users))}\n"
            f"  allowed_group_add: {json.dumps(list(self.allowed_group_add))}\n"
            f"  allowed_capabilities: {json.dumps(list(self.allowed_capabilities))}\n"
            f"  allowed_host_ports: {json.dumps(list(self.allowed_host_ports))}\n"
            f"  allowed_volumes: {json.dumps(list(self.allowed_volumes))}\n"
            f"  allowed_images: ['{self.image_pattern}']\n"
            f"  max_pids: {self.max_pids}\n"
            f"  max_nofile: {self.max_nofile}\n"
        )

    def policy_kwargs(self) -> dict[str, Any]:
        """The same policy as `dood.policy.Policy(**kwargs)` (the unit variant)."""
        return {
            "allowed_host_roots": (self.data,),
            "read_only_host_roots": (self.read_only_root,),
            "allowed_users": self.allowed_users,
            "allowed_group_add": self.allowed_group_add,
            "allowed_capabilities": self.allowed_capabilities,
            "allowed_host_ports": self.allowed_host_ports,
            "allowed_volumes": self.allowed_volumes,
            "allowed_images": (self.image_pattern,),
            "max_pids": self.max_pids,
            "max_nofile": self.max_nofile,
        }

    def fill(self, text: str, nonce: str) -> str:
        """The body text with its placeholders replaced (none of them needs JSON escaping)."""
        return text.replace(DATA, self.data).replace(NONCE, nonce).replace(SOCKGID, str(self.sock_gid))


# --- raw JSON text: objects as lists of pairs, so keys can repeat ---


class Obj(list):
    """A JSON object as its (key, value) pairs, in order, repeats allowed."""


def raw_json(value: Any) -> str:
    if isinstance(value, Obj):
        return "{" + ",".join(f"{json.dumps(k)}:{raw_json(v)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(raw_json(v) for v in value) + "]"
    if isinstance(value, dict):
        return raw_json(Obj(value.items()))
    return json.dumps(value)


# --- the generator ---


@dataclass
class Draft:
    """A body being generated: top-level and HostConfig pairs, and tags naming what it tried."""

    top: list[tuple[str, Any]] = field(default_factory=list)
    host: list[tuple[str, Any]] = field(default_factory=list)
    tags: set[str] = field(default_factory=set)


def _pick(draw, safe: list, hostile: list, hostile_percent: int) -> tuple[Any, bool]:
    """A value from `safe`, or (with `hostile_percent` odds) from `hostile`; and whether it was hostile."""
    if hostile and _chance(draw, hostile_percent):
        return draw(st.sampled_from(hostile)), True
    return draw(st.sampled_from(safe)), False


def _likely(draw, percent: int) -> bool:
    """True with about `percent` odds, the common side being True."""
    return draw(st.integers(0, 99)) < percent


def _chance(draw, percent: int) -> bool:
    """True with about `percent` odds (hypothesis favours small draws, so the rare side is the high one)."""
    return draw(st.integers(0, 99)) >= 100 - percent


USERS_SAFE = ["50000:0", "50000:0", "1000:1000"]
USERS_HOSTILE = [
    "0", "root", "50000", "50000:0 ", " 50000:0", "50000:00", "050000:0", "50000:0:0", "4294967296:0",
    "4294967296:4294967296", "50001:0", "50000:999", "50000:" + SOCKGID, "50000:root", "1000", "1000:0",
    "0:0", "", "nobody", "50000:-0", "+50000:0", "50000 : 0", "1000:1000\n", "１０００:1000", "0x3e8:1000",
    "50001:50001", "65534:65534", "2147483648:0", "50000:2000",
]  # fmt: skip
GROUPS_SAFE = [[], ["2000"]]
GROUPS_HOSTILE = [
    ["0"], ["root"], ["docker"], [SOCKGID], ["02000"], ["2000 "], [" 2000"], ["+2000"], ["2001"], ["50000"],
    ["-1"], ["4294969296"], ["2000", "0"], ["2000", "2000"], [2000], ["2000:0"], ["shadow"], ["65534"], [""],
]  # fmt: skip
CAPS_SAFE = [[], ["NET_BIND_SERVICE"], ["CAP_NET_BIND_SERVICE"], ["net_bind_service"]]
CAPS_HOSTILE = [
    ["ALL"], ["all"], ["CAP_ALL"], ["SYS_ADMIN"], ["cap_sys_admin"], ["NET_RAW"], ["NET_ADMIN"], ["CHOWN"],
    [" NET_BIND_SERVICE"], ["NET_BIND_SERVICE "], ["NET_BIND_SERVICE", "SYS_PTRACE"], ["CAP_SETUID"],
    ["DAC_OVERRIDE"], ["Cap_Net_Bind_Service"], ["NET_BIND_SERVICE\u0000"], ["FOWNER"], "NET_BIND_SERVICE",
]  # fmt: skip
CAPDROP = [[], ["ALL"], ["all"], ["NET_RAW"], ["CAP_CHOWN", "SETUID"], ["bogus"]]

BIND_SOURCES_SAFE = [
    f"{DATA}/a", f"{DATA}/a/", f"{DATA}//a", f"{DATA}/./a", f"{DATA}/a/b", f"{DATA}/a/../a", f"{DATA}/missing",
    f"{DATA}/file.txt", f"{DATA}/leaf", f"{DATA}", f"{DATA}/", f"{DATA}/a/b/../b", f"{DATA}/ro", f"{DATA}/ro/x",
]  # fmt: skip
BIND_SOURCES_HOSTILE = [
    f"{DATA}/..", f"{DATA}/../outside", f"{DATA}-evil", f"{DATA}-evil/x", f"{DATA}/../../..", f"{DATA}/a/../../../etc",
    f"{DATA}/link", f"{DATA}/link/etc", f"{DATA}/leaf/sub", f"{DATA}/a/../ro", f"{DATA}/a/b/../../ro/x", f"{DATA}/ro/",
    f"{DATA}//ro", f"{DATA}/./ro/./x", "/etc", "/", "/var/run/docker.sock", "/run/docker.sock", f"{DATA}/app.sock",
    f"{DATA}/docker.sock/x", "/tmp", "/proc", "/var/lib/docker", "relative/path", "dood-fuzz-vol1", "evil-vol",
    f"{DATA}/a\u0000/x", f"{DATA}/rolink", "//etc", "/./etc", f"{DATA}/a/..", "~", "/dev/null",
]  # fmt: skip
TARGETS = ["/w", "/data", "/w/", "/tmp/x", "/etc/passwd", "/", "/proc/x"]
BIND_OPTIONS_SAFE = [None, None, "ro", "rw", "ro,rprivate", "rprivate", "private", "ro,consistent", "rw,delegated"]
BIND_OPTIONS_HOSTILE = [
    "z", "Z", "rw,z", "ro,Z", "ro,z", "z,ro", "rshared", "rslave", "ro,rshared", "shared", "slave", "RO", "Ro",
    " ro", "ro ", "ro,rw", "rw,ro", "consistent", "delegated", "ro,nosuid", "ro:ro", "nocopy,rw", "nocopy",
    "ro,nocopy", "cached,z", "ro,cached", "ro,,", ",ro", "rprivate,z", "ro,private,Z",
]  # fmt: skip


@st.composite
def bind(draw, index: int = 0) -> tuple[str, set[str]]:
    source, hostile_source = _pick(draw, BIND_SOURCES_SAFE, BIND_SOURCES_HOSTILE, 15)
    options, hostile_options = _pick(draw, BIND_OPTIONS_SAFE, BIND_OPTIONS_HOSTILE, 15)
    if source.startswith(f"{DATA}/ro") and _likely(draw, 70):
        options = "ro" if options is None else options
    target = draw(st.sampled_from(TARGETS)) if _chance(draw, 15) else f"/w{index}"
    if _chance(draw, 5):  # an anonymous volume
        return target, {"bind:anonymous"}
    text = f"{source}:{target}" + (f":{options}" if options is not None else "")
    return text, {f"bind-source:{source}", f"bind-options:{options}"} | ({"bind:hostile"} if hostile_source else set())


@st.composite
def mount(draw, index: int = 0) -> tuple[Obj, set[str]]:
    kind = draw(st.sampled_from(["bind", "bind", "bind", "volume", "volume", "tmpfs", "Bind", "npipe", None]))
    pairs: list[tuple[str, Any]] = []
    if kind is not None:
        pairs.append(("Type", kind))
    tags = {f"mount:{kind}"}
    if kind in ("bind", "Bind", None) or _chance(draw, 10):
        source, _ = _pick(draw, BIND_SOURCES_SAFE, BIND_SOURCES_HOSTILE, 25)
        tags.add(f"mount-source:{source}")
        pairs.append(("Source", source))
        read_only = draw(st.sampled_from([None, True, False]))
        if source.startswith(f"{DATA}/ro") and _likely(draw, 70):
            read_only = True
        if read_only is not None:
            pairs.append(("ReadOnly", read_only))
        if _chance(draw, 30):
            propagation = draw(st.sampled_from(["rprivate", "private", "rshared", "shared", "rslave", "RSHARED", ""]))
            options = Obj([("Propagation", propagation)])
            if _chance(draw, 30):
                options.append(("NonRecursive", draw(st.booleans())))
            pairs.append(("BindOptions", options))
            tags.add(f"propagation:{propagation}")
    elif kind == "volume":
        name = draw(st.sampled_from([None, None, "dood-fuzz-vol1", "dood-fuzz-vol2", "evil-vol", "/etc", f"{DATA}/a"]))
        tags.add(f"volume:{name}")
        if name is not None:
            pairs.append(("Source", name))
        if _chance(draw, 15):
            driver = Obj([("Name", "local"), ("Options", {"type": "none", "o": "bind", "device": "/etc"})])
            pairs.append(("VolumeOptions", Obj([("DriverConfig", driver)])))
            tags.add("volume:driver-options")
        elif _chance(draw, 20):
            pairs.append(("VolumeOptions", Obj([("NoCopy", True)])))
    elif kind == "tmpfs":
        pairs.append(("TmpfsOptions", Obj([("SizeBytes", 1 << 20), ("Mode", draw(st.sampled_from([0o700, 0o1777])))])))
    pairs.append(("Target", draw(st.sampled_from(TARGETS)) if _chance(draw, 20) else f"/m{index}"))
    return Obj(pairs), tags


PIDS_SAFE = [None, None, 1, 100, 1024]
PIDS_HOSTILE = [0, -1, -2, 1025, 4096, 2**31, 2**63 - 1, 2**63, 1.5, "100", 1e3, -(2**63)]
ULIMITS_SAFE = [[], [{"Name": "nofile", "Soft": 1024, "Hard": 4096}], [{"Name": "nofile", "Soft": 64, "Hard": 64}]]
ULIMITS_HOSTILE = [
    [{"Name": "nofile", "Soft": 1024, "Hard": 4097}],
    [{"Name": "nofile", "Soft": -1, "Hard": -1}],
    [{"Name": "nofile", "Soft": 4096, "Hard": 1048576}],
    [{"Name": "nproc", "Soft": 10, "Hard": 10}],
    [{"Name": "NOFILE", "Soft": 10, "Hard": 10}],
    [{"Name": "core", "Soft": -1, "Hard": -1}],
    [{"Name": "memlock", "Soft": -1, "Hard": -1}],
    [{"Name": "nofile", "Soft": 10, "Hard": 10}, {"Name": "nofile", "Soft": 999999, "Hard": 999999}],
    [{"Name": " nofile", "Soft": 10, "Hard": 10}],
    [{"Name": "nofile", "Soft": 10}],
    [{"name": "nofile", "soft": 10, "hard": 10}],
    [{"Name": "nofile", "Soft": 10, "Hard": 10, "hard": 99999999}],
    [{"Name": "nofile", "Soft": "10", "Hard": 10}],
]
NETWORK_SAFE = [None, "default", "bridge", "none"]
NETWORK_HOSTILE = [
    "host", "HOST", " host", "Host", "container:abc", "Container:abc", "container:", "dood-net", "", "host ",
    "BRIDGE", "default/x", "ns:/proc/1/ns/net",
]  # fmt: skip
PORTS_SAFE = [None, {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18000"}]}]
PORT_IPS = ["127.0.0.1", "", "0.0.0.0", "::", "127.0.0.2", "localhost", "127.0.0.1 ", "::ffff:127.0.0.1", "127.1"]
PORT_NUMBERS = [
    "18000", "18099", "18100", "17999", "", "0", "18000-18010", "18000-18100", "+18000", " 18000", 18000, "18000/tcp",
    "1e4", "018000", "65536",
]  # fmt: skip
PRIVILEGED = [
    ("Privileged", True), ("PidMode", "host"), ("PidMode", "HOST"), ("PidMode", "container:x"), ("IpcMode", "host"),
    ("IpcMode", "container:x"), ("IpcMode", "shareable"), ("IpcMode", "private"), ("UTSMode", "host"),
    ("UsernsMode", "host"), ("CgroupnsMode", "host"), ("CgroupnsMode", "private"),
    ("Sysctls", {"net.ipv4.ip_unprivileged_port_start": "0"}), ("Sysctls", {}),
    ("Devices", [{"PathOnHost": "/dev/mem", "PathInContainer": "/dev/mem", "CgroupPermissions": "rwm"}]),
    ("DeviceCgroupRules", ["c 1:1 rwm"]), ("SecurityOpt", ["seccomp=unconfined"]), ("SecurityOpt", ["label=disable"]),
    ("SecurityOpt", ["apparmor=unconfined"]), ("SecurityOpt", ["no-new-privileges:false"]),
    ("SecurityOpt", ["no-new-privileges"]), ("SecurityOpt", ["systempaths=unconfined"]), ("MaskedPaths", []),
    ("ReadonlyPaths", []), ("Runtime", "nvidia"), ("Runtime", "runc"), ("Runtime", "RUNC"),
    ("Runtime", "io.containerd.runc.v2"), ("Capabilities", ["CAP_SYS_ADMIN"]), ("VolumesFrom", ["x"]),
    ("Links", ["x:y"]), ("VolumeDriver", "local"), ("LogConfig", {"Type": "syslog", "Config": {}}),
    ("LogConfig", {"Type": "json-file", "Config": {"max-size": "1m"}}), ("CgroupParent", "/"), ("Cgroup", "host"),
    ("OomScoreAdj", -500), ("OomKillDisable", True), ("PublishAllPorts", True), ("PublishAllPorts", False),
    ("Tmpfs", {"/t": "size=1m"}), ("Tmpfs", {"/proc": ""}), ("ReadonlyRootfs", True), ("Init", True),
    ("AutoRemove", False), ("ShmSize", 1 << 20), ("Memory", 1 << 26), ("Annotations", {"x": "y"}),
    ("DeviceRequests", [{"Driver": "nvidia", "Count": 1, "Capabilities": [["gpu"]]}]),
    ("BlkioDeviceReadBps", [{"Path": "/dev/sda", "Rate": 1}]), ("ExtraHosts", ["h:127.0.0.1"]),
    ("Privileged", False), ("Privileged", None), ("Privileged", 0), ("Privileged", "true"),
]  # fmt: skip
LABELS_HOSTILE = [
    ("dood.managed", "false"), ("dood.stack", "other"), ("dood.stack", ""), ("dood.gpus", "0"), ("dood.host", "h"),
    ("dood.owner", "x"), ("dood.", "x"), ("DOOD.stack", "other"), ("dood.stack ", "other"), ("Dood.managed", "x"),
    ("dood.gpu_ticket", "x"), ("dood.served", "x"), ("dood.ſtack", "x"), ("dood.stack\u0000", "x"),
    ("dood.managed", "true"), ("dood.stack", "fuzz"),
]  # fmt: skip
LABELS_IDENTITY = [
    ("dood.dag_id", "fuzz_dag"), ("dood.task_id", "t"), ("dood.run_id", "r"), ("dood.map_index", "-1"),
    ("dood.try_number", "1"),
]  # fmt: skip
IMAGES_SAFE = ["dood-test-busybox:latest", "dood-test-busybox:latest", "dood-test-busybox"]
IMAGES_HOSTILE = [
    "dood-python-base:bookworm", "docker.io/library/dood-test-busybox:latest", "dood-test-busybox:nope",
    "DOOD-TEST-BUSYBOX", "dood-test-busybox:latest@sha256:" + "0" * 64, "localhost/dood-test-busybox:latest",
    "dood-test-busybox:*", "", "dood-ml-example:latest",
]  # fmt: skip


def _case_variant(draw, key: str) -> str:
    return draw(st.sampled_from([key.lower(), key.upper(), key[0].lower() + key[1:], key.swapcase()]))


@st.composite
def create_bodies(draw) -> tuple[str, frozenset[str]]:
    """(raw JSON text of a create body with placeholders, tags naming the hostile parts it tried)."""
    d = Draft()
    image, hostile = _pick(draw, IMAGES_SAFE, IMAGES_HOSTILE, 6)
    d.top.append(("Image", image))
    if hostile:
        d.tags.add(f"image:{image}")
    d.top.append(("Cmd", ["true"]))
    user, hostile = _pick(draw, USERS_SAFE, USERS_HOSTILE, 12)
    if not _chance(draw, 3):  # no User at all: the image's default (root)
        d.top.append(("User", user))
        d.tags.add(f"user:{user}" if hostile else "user:safe")
    else:
        d.tags.add("user:absent")
    labels = Obj([(NONCE_LABEL, NONCE)])
    if _chance(draw, 40):
        labels.extend(draw(st.lists(st.sampled_from(LABELS_IDENTITY), max_size=5, unique=True)))
    if _chance(draw, 25):
        extra = draw(st.lists(st.sampled_from(LABELS_HOSTILE), min_size=1, max_size=3, unique_by=lambda p: p[0]))
        labels.extend(extra)
        d.tags.update(f"label:{key}" for key, _ in extra)
    d.top.append(("Labels", labels))
    if _chance(draw, 5):
        d.top.append(("Env", draw(st.sampled_from([["A=1"], ["NVIDIA_VISIBLE_DEVICES=all"], ["PATH=/bin"]]))))
    if _chance(draw, 5):
        d.top.append(("Volumes", draw(st.sampled_from([{"/v": {}}, {"/etc:/etc": {}}]))))
    if _chance(draw, 4):
        endpoint = draw(st.sampled_from(["bridge", "host", "dood-net", "container:x"]))
        d.top.append(("NetworkingConfig", Obj([("EndpointsConfig", {endpoint: {}})])))
        d.tags.add(f"endpoint:{endpoint}")

    # HostConfig
    if _likely(draw, 60):
        binds = [draw(bind(index)) for index in range(draw(st.integers(0, 3)))]
        d.host.append(("Binds", [text for text, _ in binds]))
        for _, tags in binds:
            d.tags.update(tags)
    if _chance(draw, 30):
        mounts = [draw(mount(index)) for index in range(draw(st.integers(1, 2)))]
        d.host.append(("Mounts", [m for m, _ in mounts]))
        for _, tags in mounts:
            d.tags.update(tags)
    for name, safe, hostile_values, percent, chance in (
        ("GroupAdd", GROUPS_SAFE, GROUPS_HOSTILE, 20, 35),
        ("CapAdd", CAPS_SAFE, CAPS_HOSTILE, 25, 30),
        ("CapDrop", CAPDROP, [], 0, 15),
        ("PidsLimit", PIDS_SAFE, PIDS_HOSTILE, 20, 50),
        ("Ulimits", ULIMITS_SAFE, ULIMITS_HOSTILE, 30, 25),
        ("NetworkMode", NETWORK_SAFE, NETWORK_HOSTILE, 20, 25),
    ):
        if _chance(draw, chance):
            value, hostile = _pick(draw, safe, hostile_values, percent)
            if value is not None or _chance(draw, 30):
                d.host.append((name, value))
                d.tags.add(f"{name}:{json.dumps(value)}" if hostile else f"{name}:safe")
    if _chance(draw, 20):
        ports, hostile = _pick(draw, PORTS_SAFE, [None], 50)
        if hostile:
            binding = {"HostIp": draw(st.sampled_from(PORT_IPS)), "HostPort": draw(st.sampled_from(PORT_NUMBERS))}
            ports = {"80/tcp": [binding]}
            d.tags.add(f"ports:{json.dumps(ports)}")
        d.host.append(("PortBindings", ports))
    if _chance(draw, 15):
        extra = draw(st.lists(st.sampled_from(PRIVILEGED), min_size=1, max_size=2, unique_by=lambda p: p[0]))
        d.host.extend(extra)
        d.tags.update(f"host:{name}={json.dumps(value)}" for name, value in extra)
    _mutate(draw, d)
    return raw_json(Obj(d.top)), frozenset(d.tags)


def _mutate(draw, d: Draft) -> None:
    """Key spellings, repeated keys, HostConfig fields at the top level, and where HostConfig goes."""
    # a HostConfig field moved (or copied) to the top level, where the daemon's deprecated wrapper reads it
    if d.host and _chance(draw, 4):
        index = draw(st.integers(0, len(d.host) - 1))
        name, value = d.host[index]
        if _chance(draw, 50):
            d.host.pop(index)
        d.top.append((name if _likely(draw, 70) else _case_variant(draw, name), value))
        d.tags.add(f"top-level:{name}")
    if _chance(draw, 3):
        d.top.append(("Binds", ["/etc:/host-etc"]))
        d.tags.add("top-level:Binds:/etc")
    # keys spelled in another case (Go matches them case-insensitively)
    for pairs, where in ((d.top, "top"), (d.host, "host")):
        for index, (name, value) in enumerate(pairs):
            if _chance(draw, 3):
                pairs[index] = (_case_variant(draw, name), value)
                d.tags.add(f"case:{where}.{name}")
    # a key repeated (raw JSON: the second one is a different spelling or the same)
    for pairs, where in ((d.top, "top"), (d.host, "host")):
        if pairs and _chance(draw, 4):
            name, value = pairs[draw(st.integers(0, len(pairs) - 1))]
            twin = name if _chance(draw, 50) else _case_variant(draw, name)
            replacement = {
                "user": "0", "privileged": True, "binds": ["/:/host"], "image": "dood-python-base:bookworm",
                "labels": {NONCE_LABEL: NONCE, "dood.stack": "other"}, "pidslimit": -1, "groupadd": ["0"],
                "capadd": ["SYS_ADMIN"], "networkmode": "host",
            }.get(name.lower(), value)  # fmt: skip
            pairs.append((twin, replacement))
            d.tags.add(f"repeat:{where}.{name}")
    # where HostConfig goes: usually one object; sometimes none, twice, or in another spelling
    if d.host or _chance(draw, 10):
        key = "HostConfig" if not _chance(draw, 8) else _case_variant(draw, "HostConfig")
        d.top.append((key, Obj(d.host)))
        if key != "HostConfig":
            d.tags.add(f"case:{key}")
        if _chance(draw, 3):
            d.top.append((_case_variant(draw, "HostConfig"), Obj([("Privileged", True)])))
            d.tags.add("repeat:HostConfig")
    if _chance(draw, 3):
        d.top.append((draw(st.sampled_from(["hostconfig", "HOSTCONFIG", "Hostconfig", "HostConfig"])), None))
        d.tags.add("null:HostConfig")


# --- the invariants, over the daemon's inspect of a created container ---


def _clean(path: str) -> str:
    return posixpath.normpath("/" + path.lstrip("/")) if path else path


def _under(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root.rstrip("/") + "/")


def _system(path: str) -> str | None:
    if path == "/":
        return "/"
    return next((s for s in SYSTEM_PATHS if _under(path, s) or _under(s, path)), None)


def _cap_name(cap: Any) -> str:
    name = str(cap).upper()
    return name[4:] if name.startswith("CAP_") else name


@dataclass(frozen=True)
class Expect:
    """What the invariants compare with: the policy, and the daemon's own defaults seen on a plain create."""

    policy: FuzzPolicy
    image_id: str | None = None
    masked_paths: tuple[str, ...] | None = None
    readonly_paths: tuple[str, ...] | None = None
    through_proxy: bool = True  # False: a canonical body (the unit variant), before the proxy's additions


def _host_path_problems(source: Any, read_only: bool, where: str, p: FuzzPolicy, resolve: bool) -> list[str]:
    if not isinstance(source, str) or not source.startswith("/"):
        return [f"binds: {where} source {source!r} is not an absolute host path"]
    found = []
    clean = _clean(source)
    real = os.path.realpath(clean) if resolve else clean
    for shown, path in (("", clean), (" (resolved)", real)):
        if not _under(path, p.data):
            found.append(f"binds: {where} source {source!r}{shown} {path} lies under no allowed root ({p.data})")
        elif _system(path):
            found.append(f"binds: {where} source {source!r}{shown} touches the system path {_system(path)}")
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if name.endswith(".sock") or "docker.sock" in path:
            found.append(f"binds: {where} source {source!r}{shown} is a socket")
        if _under(path, p.read_only_root) and not read_only:
            found.append(f"binds: {where} source {source!r}{shown} lies under the read-only root and is writable")
    return list(dict.fromkeys(found))


def _volume_allowed(name: Any, p: FuzzPolicy) -> bool:
    return isinstance(name, str) and any(fnmatch.fnmatchcase(name, pattern) for pattern in p.allowed_volumes)


def _named_in(host: Mapping) -> set[str]:
    names = {str(b).split(":")[0] for b in host.get("Binds") or []}
    return names | {str(m.get("Source")) for m in host.get("Mounts") or [] if isinstance(m, Mapping)}


def broken_invariants(inspect: Mapping[str, Any], expect: Expect, gpus_asked: bool = False) -> list[str]:
    """Every invariant the created container breaks (empty: it is what the policy allows)."""
    p = expect.policy
    proxy = expect.through_proxy
    config = inspect.get("Config") or {}
    host = inspect.get("HostConfig") or {}
    found: list[str] = []
    add = found.append

    # identity
    if config.get("User") not in p.allowed_users:
        add(f"identity: Config.User {config.get('User')!r} is not exactly one of allowed_users {list(p.allowed_users)}")
    for group in host.get("GroupAdd") or []:
        allowed = {str(g) for g in p.allowed_group_add}
        if group not in allowed:
            add(f"identity: HostConfig.GroupAdd {group!r} is not exactly one of allowed_group_add {sorted(allowed)}")
    if expect.image_id is not None and inspect.get("Image") != expect.image_id:
        add(f"image: the container's image {inspect.get('Image')} is not the allowed test image {expect.image_id}")

    # capabilities and confinement
    for cap in host.get("CapAdd") or []:
        if _cap_name(cap) not in p.allowed_capabilities:
            add(f"capability: HostConfig.CapAdd {cap!r} is beyond allowed_capabilities {list(p.allowed_capabilities)}")
    if host.get("Capabilities"):
        add(f"capability: HostConfig.Capabilities {host.get('Capabilities')!r} replaces the capability set")
    if host.get("Privileged"):
        add("capability: HostConfig.Privileged is set")
    options = host.get("SecurityOpt") or []
    if any(option not in NO_NEW_PRIVILEGES for option in options):
        add(f"security: HostConfig.SecurityOpt {options!r} holds more than no-new-privileges")
    if proxy and not any(option in NO_NEW_PRIVILEGES for option in options):
        add(f"security: HostConfig.SecurityOpt {options!r} lacks no-new-privileges (the proxy forces it)")
    for name in ("Devices", "DeviceCgroupRules", "Sysctls", "Annotations", "VolumesFrom", "Links"):
        if host.get(name):
            add(f"confinement: HostConfig.{name} {host.get(name)!r} is set")
    if host.get("DeviceRequests") and not gpus_asked:
        add(f"confinement: HostConfig.DeviceRequests {host.get('DeviceRequests')!r} without GPUs allowed")
    for name in ("PidMode", "IpcMode", "UTSMode", "UsernsMode", "CgroupnsMode", "NetworkMode", "Cgroup"):
        mode = str(host.get(name) or "").strip().lower()
        if mode == "host" or mode.startswith("container:"):
            add(f"namespace: HostConfig.{name} {host.get(name)!r} shares a host or container namespace")
    for name, default in (("MaskedPaths", expect.masked_paths), ("ReadonlyPaths", expect.readonly_paths)):
        value = host.get(name)
        if proxy and (not value or (default is not None and tuple(value) != default)):
            add(f"confinement: HostConfig.{name} {value!r} is not the daemon's default {default!r}")
        if not proxy and value is not None:
            add(f"confinement: HostConfig.{name} {value!r} overrides the daemon's default")
    runtime = host.get("Runtime")  # io.containerd.runc.v2: the same runc, through containerd's v2 shim
    if runtime not in RUNC and (proxy or runtime not in (None, "")):
        add(f"runtime: HostConfig.Runtime {runtime!r} is not runc")
    if host.get("CgroupParent"):
        add(f"confinement: HostConfig.CgroupParent {host.get('CgroupParent')!r} is set")

    # mounts
    for index, entry in enumerate(host.get("Binds") or []):
        where = f"HostConfig.Binds[{index}] {entry!r}"
        parts = str(entry).split(":")
        if len(parts) == 1:
            continue  # an anonymous volume
        modes = parts[2].split(",") if len(parts) > 2 else []
        if {"z", "Z"} & set(modes):
            add(f"binds: {where} asks for an SELinux relabel (:z/:Z) of a host path")
        if SHARED_PROPAGATIONS & set(modes):
            add(f"binds: {where} asks for shared/slave propagation")
        if not parts[0].startswith("/"):
            if not _volume_allowed(parts[0], p):
                add(f"volumes: {where} names the volume {parts[0]!r}, not in allowed_volumes")
            continue
        found.extend(_host_path_problems(parts[0], "ro" in modes, where, p, proxy))
    for index, entry in enumerate(host.get("Mounts") or []):
        where = f"HostConfig.Mounts[{index}]"
        kind = entry.get("Type")
        if kind == "bind":
            found.extend(_host_path_problems(entry.get("Source"), bool(entry.get("ReadOnly")), where, p, proxy))
            propagation = str((entry.get("BindOptions") or {}).get("Propagation") or "").lower()
            if propagation in SHARED_PROPAGATIONS:
                add(f"binds: {where} asks for {propagation} propagation")
        elif kind == "volume":
            if entry.get("Source") and not _volume_allowed(entry.get("Source"), p):
                add(f"volumes: {where} names the volume {entry.get('Source')!r}, not in allowed_volumes")
            if (entry.get("VolumeOptions") or {}).get("DriverConfig"):
                add(f"volumes: {where} carries volume driver options")
        elif kind != "tmpfs":
            add(f"mounts: {where} has the type {kind!r}")
    named = _named_in(host)
    for index, entry in enumerate(inspect.get("Mounts") or []):
        where = f"Mounts[{index}] (inspect) {entry.get('Type')} {entry.get('Source') or entry.get('Name')!r}"
        mode = str(entry.get("Mode") or "")
        if entry.get("Type") == "bind" and {"z", "Z"} & set(mode.split(",")):  # a volume's own "z" is the daemon's
            add(f"binds: {where} has the relabel mode {mode!r}")
        if str(entry.get("Propagation") or "") in SHARED_PROPAGATIONS:
            add(f"binds: {where} has {entry.get('Propagation')} propagation")
        if entry.get("Type") == "bind":
            found.extend(_host_path_problems(entry.get("Source"), not entry.get("RW", True), where, p, proxy))
        elif entry.get("Type") == "volume":
            name = entry.get("Name")
            anonymous = isinstance(name, str) and re.fullmatch(r"[0-9a-f]{64}", name) and name not in named
            if not anonymous and not _volume_allowed(name, p):
                add(f"volumes: {where} is the named volume {name!r}, not in allowed_volumes")

    # labels
    labels = config.get("Labels") or {}
    if proxy:
        if labels.get("dood.managed") != "true":
            add(f"labels: dood.managed is {labels.get('dood.managed')!r}, not 'true'")
        if labels.get("dood.stack") != p.stack:
            add(f"labels: dood.stack is {labels.get('dood.stack')!r}, not the proxy's stack {p.stack!r}")
        for key in labels:
            if not key.startswith("dood.") or key in IDENTITY_LABELS | {"dood.managed", "dood.stack"}:
                continue
            if key == "dood.gpus" and gpus_asked:
                continue
            add(f"labels: {key!r}={labels[key]!r} is a dood.* label the client may not set")

    # resources
    pids = host.get("PidsLimit")
    if (proxy or pids is not None) and not (isinstance(pids, int) and 0 < pids <= p.max_pids):
        add(f"resources: HostConfig.PidsLimit {pids!r} is not a limit within max_pids {p.max_pids}")
    for entry in host.get("Ulimits") or []:
        name, soft, hard = entry.get("Name"), entry.get("Soft"), entry.get("Hard")
        within = all(isinstance(v, int) and 0 <= v <= p.max_nofile for v in (soft, hard))
        if name != "nofile" or not within:
            add(f"resources: HostConfig.Ulimits {entry!r} is not nofile within max_nofile {p.max_nofile}")

    # ports
    if host.get("PublishAllPorts"):
        add("ports: HostConfig.PublishAllPorts is set")
    low, high = p.allowed_host_ports
    for port, bindings in (host.get("PortBindings") or {}).items():
        for binding in bindings or []:
            ip, number = binding.get("HostIp"), str(binding.get("HostPort"))
            match = re.fullmatch(r"([0-9]+)(?:-([0-9]+))?", number)
            in_range = match is not None and low <= int(match.group(1)) <= int(match.group(2) or match.group(1)) <= high
            if ip != "127.0.0.1" or not in_range:
                add(f"ports: {port} published on {ip!r}:{binding.get('HostPort')!r}, not 127.0.0.1 within {low}-{high}")

    # networks
    for network in (inspect.get("NetworkSettings") or {}).get("Networks") or {}:
        if not any(fnmatch.fnmatchcase(network, pattern) for pattern in p.allowed_networks) or network == "host":
            add(f"network: joined {network!r}, not in allowed_networks {list(p.allowed_networks)}")
    return found


def as_daemon_reads(canonical: Mapping[str, Any]) -> dict[str, Any]:
    """A canonical create body as an inspect-shaped dict (the unit variant's stand-in for the daemon)."""
    config = {key: value for key, value in canonical.items() if key not in ("HostConfig", "NetworkingConfig")}
    host = dict(canonical.get("HostConfig") or {})
    for name in ("CapAdd", "CapDrop"):  # strslice.StrSlice: a string is a list of one
        if isinstance(host.get(name), str):
            host[name] = [host[name]]
    mounts = []
    for entry in host.get("Binds") or []:
        parts = str(entry).split(":")
        if len(parts) >= 2 and parts[0].startswith("/"):
            mode = parts[2] if len(parts) > 2 else ""
            mounts.append({"Type": "bind", "Source": parts[0], "Mode": mode, "RW": "ro" not in mode.split(",")})
    return {"Config": config, "HostConfig": host, "Mounts": mounts}


def tag_summary(tags: Iterable[str]) -> str:
    return ", ".join(sorted(tags))
