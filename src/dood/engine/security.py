"""What the Docker engine itself adds to containment, read from its `GET /info`; and, on an engine with
user-namespace remapping (`dockerd --userns-remap`), which host ids a container's ids are.

`EngineSecurity.from_info(info)` reads `SecurityOptions` (`["name=seccomp,profile=default", "name=userns"]`)
and `DockerRootDir`: a remapping engine keeps its images and containers under `<data root>/<uid>.<gid>`,
the host uid and gid a container's root is, so the page and the proxy's startup line can say "container
uid 0 = host uid 100000" from the API alone. dood-proxy logs it when it starts (`startup_line`) and the
DooD page shows it per host (`dood.ui.reader`).

`RemapIds.load()` reads the remap user's ranges in /etc/subuid and /etc/subgid as dockerd does (sorted by
their first host id; container ids counted on from 0 across them), so a directory for a container whose
group is `gid` can be group-owned by the host gid that is (`host_gid`). The files must agree with the
engine's `DockerRootDir`, else nothing is mapped (the files are not the ones the engine read).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: The user (and group) `dockerd --userns-remap=default` makes and maps containers to.
DEFAULT_REMAP_USER = "dockremap"
SUBUID = "/etc/subuid"
SUBGID = "/etc/subgid"
_ROOT_DIR = re.compile(r"/(\d{1,10})\.(\d{1,10})/?$")


class RemapUnknown(ValueError):
    """The host ids a remapping engine gives a container cannot be known here (said with the fix)."""


@dataclass(frozen=True)
class EngineSecurity:
    """The engine's own security options (its `/info`)."""

    userns: bool = False  # dockerd --userns-remap: no container id is the same host id
    rootless: bool = False  # the daemon itself runs as an unprivileged user
    seccomp: str | None = None  # the default seccomp profile ("default", "builtin", a path), None without seccomp
    apparmor: bool = False
    selinux: bool = False
    cgroupns: bool = False  # containers get a private cgroup namespace by default
    remapped_root: tuple[int, int] | None = None  # host (uid, gid) of a container's root, with userns

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> EngineSecurity:
        options = {}
        for entry in info.get("SecurityOptions") or ():
            fields = dict(part.partition("=")[::2] for part in str(entry).split(","))
            name = fields.pop("name", None) or str(entry)  # API < 1.24: bare names ("apparmor", "seccomp")
            options[name] = fields
        userns = "userns" in options
        root = _ROOT_DIR.search(str(info.get("DockerRootDir") or "")) if userns else None
        return cls(
            userns=userns,
            rootless="rootless" in options,
            seccomp=(options["seccomp"].get("profile") or "default") if "seccomp" in options else None,
            apparmor="apparmor" in options,
            selinux="selinux" in options,
            cgroupns="cgroupns" in options,
            remapped_root=(int(root.group(1)), int(root.group(2))) if root else None,
        )

    def user_namespaces(self) -> str:
        """One phrase for a log line or the page: are container uids host uids?"""
        if self.userns and self.remapped_root:
            uid, gid = self.remapped_root
            return f"remapped (container uid 0 = host uid {uid}, gid 0 = host gid {gid})"
        if self.userns:
            return "remapped (host ids of container root unknown: DockerRootDir has no <uid>.<gid>)"
        if self.rootless:
            return "rootless engine (container uid 0 = the engine's own unprivileged user)"
        return "not remapped (container uids are host uids; see docs/security.md)"

    def summary(self) -> str:
        """The startup line's text: user namespaces, then the other options the engine reports."""
        others = [f"seccomp {self.seccomp}" if self.seccomp else "no seccomp"]
        others += [name for name in ("apparmor", "selinux", "cgroupns") if getattr(self, name)]
        return f"user namespaces: {self.user_namespaces()}; {', '.join(others)}"


async def startup_line(daemon: Any) -> str:
    """What dood-proxy logs of its engine when it starts; `daemon` has `call(method, target)` and `endpoint`
    (`dood.proxy.daemon.Daemon`). Never raises: an engine that does not answer is said to."""
    try:
        status, body = await daemon.call("GET", "/info")
        info = json.loads(body) if status == 200 else None
    except Exception as exc:  # noqa: BLE001 - a log line, never a failed start (HttpError, OSError, bad JSON)
        return f"Engine {daemon.endpoint}: /info did not answer ({exc}); its security options are unknown"
    if not isinstance(info, dict):
        return f"Engine {daemon.endpoint}: /info answered {status}; its security options are unknown"
    security = EngineSecurity.from_info(info)
    return f"Engine {daemon.endpoint} (Docker {info.get('ServerVersion', '?')}): {security.summary()}"


async def host_ids(daemon: Any, user: str = DEFAULT_REMAP_USER) -> RemapIds | None:
    """The engine's remap (container ids -> host ids), None when it does not remap (a container id is the
    host id). RemapUnknown (said with the fix) when /info does not answer or the ranges cannot be known:
    never a guess."""
    try:
        status, body = await daemon.call("GET", "/info")
        info = json.loads(body) if status == 200 else None
    except Exception as exc:  # noqa: BLE001 - said to the client; nothing is decided without the remap
        raise RemapUnknown(
            f"the Docker daemon's /info did not answer ({exc}): its user namespaces are unknown"
        ) from None
    if not isinstance(info, dict):
        raise RemapUnknown(f"the Docker daemon's /info answered {status}: its user namespaces are unknown")
    security = EngineSecurity.from_info(info)
    if not security.userns:
        return None
    return await asyncio.to_thread(RemapIds.load, security.remapped_root, user)


class EngineRemap:
    """`host_ids` of one engine, asked again once `max_age` seconds have passed: dood-proxy needs it for
    every create or start with a read-write bind and every directory with a user, and /info is one of the
    engine's slowest calls. What can change in between: only the engine's own `--userns-remap`, which only
    the host's administrator can change, and only by restarting the engine (which the proxy's clients see
    as a failure, then a refusal while the remap cannot be read). A failure is never kept."""

    def __init__(self, daemon: Any, *, max_age: float = 5.0, user: str = DEFAULT_REMAP_USER) -> None:
        self.daemon, self.max_age, self.user = daemon, max_age, user
        self._known: tuple[float, RemapIds | None] | None = None

    async def get(self) -> RemapIds | None:
        now = time.monotonic()
        if self._known is not None and now - self._known[0] < self.max_age:
            return self._known[1]
        remap = await host_ids(self.daemon, self.user)
        self._known = (now, remap)
        return remap


def gid_map_of(
    info: Mapping[str, Any], user: str = DEFAULT_REMAP_USER, subuid: str = SUBUID, subgid: str = SUBGID
) -> Callable[[int], int | None] | None:
    """The host gid of a container gid, from an `/info` already read (the Airflow side with the raw socket:
    `api.info()`); None when the engine does not remap."""
    security = EngineSecurity.from_info(info)
    if not security.userns:
        return None
    return RemapIds.load(security.remapped_root, user, subuid=subuid, subgid=subgid).host_gid


# --- the remap: container ids -> host ids ---


def parse_subid(text: str, owner: str | int) -> tuple[tuple[int, int], ...]:
    """`(first host id, count)` of `owner`'s lines (`name:first:count`; a name or a numeric id), sorted by
    first id as dockerd sorts them."""
    ranges = []
    for line in text.splitlines():
        name, _, rest = line.strip().partition(":")
        first, _, count = rest.partition(":")
        if name == str(owner) and first.isdigit() and count.isdigit() and int(count) > 0:
            ranges.append((int(first), int(count)))
    return tuple(sorted(ranges))


def to_host(container_id: int, ranges: Sequence[tuple[int, int]]) -> int | None:
    """The host id a container id is under these ranges (container ids 0.. run across them in order); None
    when it is outside every range (the kernel shows such an id as nobody / 65534)."""
    if container_id < 0:
        return None
    base = 0
    for first, count in ranges:
        if container_id < base + count:
            return first + container_id - base
        base += count
    return None


@dataclass(frozen=True)
class RemapIds:
    """The remapping of one engine: its user's uid and gid ranges."""

    user: str
    uids: tuple[tuple[int, int], ...]
    gids: tuple[tuple[int, int], ...]

    @classmethod
    def load(
        cls,
        root: tuple[int, int] | None,
        user: str = DEFAULT_REMAP_USER,
        group: str | None = None,
        subuid: str = SUBUID,
        subgid: str = SUBGID,
    ) -> RemapIds:
        """`user`'s (and `group`'s, default the same name) ranges, checked against `root`, the engine's
        remapped root (`EngineSecurity.remapped_root`); RemapUnknown saying what to fix otherwise."""
        try:
            with open(subuid) as uid_file, open(subgid) as gid_file:
                uids, gids = parse_subid(uid_file.read(), user), parse_subid(gid_file.read(), group or user)
        except OSError as exc:
            raise RemapUnknown(
                f"the engine remaps user namespaces, and {exc.filename} cannot be read ({exc.strerror}): give "
                f"this process the host's {subuid} and {subgid} (read-only)"
            ) from None
        if not uids or not gids:
            raise RemapUnknown(
                f"the engine remaps user namespaces, and {subuid} / {subgid} have no ranges for {user!r}: name the "
                "user of the engine's --userns-remap (default: dockremap)"
            )
        made = cls(user, uids, gids)
        if root is None or (made.host_uid(0), made.host_gid(0)) != root:
            said = "nothing" if root is None else f"{root[0]}:{root[1]}"
            raise RemapUnknown(
                f"{subuid} / {subgid} map container root of {user!r} to host {made.host_uid(0)}:{made.host_gid(0)}, "
                f"and the engine's DockerRootDir says {said}: these are not the files or the user the engine read"
            )
        return made

    def host_uid(self, uid: int) -> int | None:
        return to_host(uid, self.uids)

    def host_gid(self, gid: int) -> int | None:
        return to_host(gid, self.gids)
