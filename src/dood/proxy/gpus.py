"""dood-proxy as the referee of GPU creates: no container through it shares a GPU with another.

dood's launcher names free GPUs itself (`dood.gpus.claims`); code using the raw SDK through the proxy might
not. So a create asking for GPUs is refused (403) when it asks by `Count` (the engine would give GPUs
0…N-1 whoever holds them), names a GPU the inventory does not have (`DeviceIDs` are rewritten to the
inventory's own ids, so an alias such as '00' or a UUID is the GPU it names), or names a GPU that another
running (or just created) container holds; the holdings are read from the engine, over every stack.
An exited container holds nothing, so every start (the first one too) is checked again the same way: a
container is started only while no other holds one of its GPUs.

Look-and-create (and look-and-start) is atomic on the engine, not just in this process: it runs under the
engine-wide lock `dood-gpu-lock` (`dood.gpu_lock`), the one dood's launcher takes on the raw socket, so two
proxies (two stacks), launchers on the raw socket and every client of this proxy take turns. Behind the proxy,
the lock is the proxy's alone: a client's create of it is refused with `PROXY_TAKES_LOCK`, and dood's launcher
then leaves the serialising to the proxy.

Every `dood.gpu*` label and `dood-gpu…` name is the referee's to check (`dood.proxy.identity` passes them on):
`dood.gpus` is forced to the GPUs the body names (dropped elsewhere); `dood.gpu_served` is kept only on a
GPU create naming a live ticket of the same stack; queue tickets (`dood.gpus.queue`) and the discovery probe
(`dood.gpus.discovery`) pass only in exactly their own shape, and a ticket only with a key that is now or
one this stack placed before (no jumping the queue); the lock's name and label never pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from dood.config.file import read_config_file
from dood.config.gpu_inventory import GpuInventory
from dood.config.model import parse_config
from dood.gpus.engine_clock import offset_of
from dood.gpus.holdings import (
    COLLISION,
    GPUS_LABEL,
    LOCK_LABEL,
    LOCK_NAME,
    PROBE_ENTRYPOINT,
    PROBE_LABEL,
    PROBE_NAME,
    PROBE_QUERY,
    PROXY_TAKES_LOCK,
    SERVED_LABEL,
    asked,
    canonical_device_ids,
    held_by,
    holders,
    is_probe,
    label_ids,
    named,
    parse_gpus,
    referee,
)
from dood.gpus.queue import (
    KEY_NOT_CURRENT,
    KEY_PATTERN,
    TICKET_FOR_LABEL,
    TICKET_LABEL,
    TICKET_NAME,
    TICKET_UNTIL_LABEL,
    TICKET_WANTS_LABEL,
    tickets,
    wants_of,
)
from dood.naming import HOST_LABEL, MANAGED_LABEL, STACK_LABEL
from dood.policy import Policy, apply_defaults
from dood.proxy.allow_list import Refused
from dood.proxy.daemon import daemon_message

if TYPE_CHECKING:
    from dood.proxy.daemon import Daemon

log = logging.getLogger("dood.proxy")
GPU_LABEL_PREFIX = "dood.gpu"
GPU_NAME_PREFIX = "dood-gpu"
TICKET_LABELS = frozenset({TICKET_LABEL, TICKET_WANTS_LABEL, TICKET_UNTIL_LABEL, TICKET_FOR_LABEL})
#: Labels a ticket may carry: its own and the proxy's.
_TICKET_ALLOWED_LABELS = TICKET_LABELS | {MANAGED_LABEL, STACK_LABEL, HOST_LABEL}
#: What a ticket's (never started) create body may set, as dood sends it, plus what the proxy adds.
_TICKET_KEYS = frozenset({"Image", "Cmd", "User", "Labels", "HostConfig"})
_TICKET_HOST_KEYS = frozenset(
    {"SecurityOpt", *apply_defaults({}, Policy(default_memory=2**30))["HostConfig"]}  # the proxy's own additions
)
#: How far (seconds, the daemon's clock) a new ticket's key may be from now: its waiter took it just before.
FRESH_KEY_SECONDS = 30.0
#: How far beyond a lease a ticket's `until` may reach (the placer's estimate of the daemon's clock).
UNTIL_SLACK_SECONDS = 5.0
#: Keys this proxy saw placed, per stack: a waiter whose ticket lapsed (a triggerer restart) may place it again.
_REMEMBERED_KEYS = 100_000
_CLOCK_SECONDS = 600.0  # how long a measured daemon clock offset is used before it is measured again


@dataclass(frozen=True)
class Inventory:
    """The GPUs this proxy knows of: every accepted spelling -> the GPU's id, and where that came from."""

    aliases: Mapping[str, str]
    source: str

    @property
    def size(self) -> int:
        return len(set(self.aliases.values()))


def configured_inventory(path: str | os.PathLike[str] | None, host: str | None = None) -> GpuInventory:
    """The `gpus:` section of the dood config at `path` (that of `hosts.<host>` when it has its own): what
    dood-proxy checks DeviceIDs, ticket sizes and leases against. No path: the defaults (no devices)."""
    if not path:
        return GpuInventory()
    data, source = read_config_file(path)
    own = ((data.get("hosts") or {}).get(host) or {}).get("gpus") if host else None
    return parse_config(own if own is not None else data.get("gpus"), source, section="gpus")


class GpuReferee:
    """Checks, under the engine-wide lock, every create through the proxy that names GPUs or GPU labels, and
    every start of a container that names GPUs."""

    def __init__(
        self,
        daemon: Daemon,
        *,
        created_hold_seconds: float | None = None,
        probe_images: tuple[str, ...] = (),
        inventory: GpuInventory | None = None,
        max_gpus: int | None = None,
    ) -> None:
        self.daemon = daemon
        self.probe_images = probe_images  # the policy's gpu_probe_images: discovery's probe may run these
        self.inventory = inventory or GpuInventory()
        self.created_hold_seconds = (
            self.inventory.created_hold_seconds if created_hold_seconds is None else created_hold_seconds
        )
        self.max_gpus = max_gpus  # the policy's: no ticket waits for more
        self.holder = f"dood-proxy {socket.gethostname()}:{os.getpid()}"  # the lock's label when we hold it
        self._lock: asyncio.Lock | None = None  # made on first use, inside the proxy's event loop
        self._offset: tuple[float, float] | None = None  # (daemon clock minus ours, when measured)
        self._probe: tuple[str, Inventory | None] | None = None  # (probe container id, what it recorded)
        self._keys: dict[tuple[str, str], float] = {}  # (stack, ticket key) -> when last placed through us

    # --- the check around a create ---

    @contextlib.asynccontextmanager
    async def checked(self, canonical: dict[str, Any], prefix: str, name: str | None = None) -> AsyncIterator[None]:
        """Around the upstream create: refuse (403) a GPU request that could collide, a forged GPU label or
        `dood-gpu…` name; label the GPUs of the rest."""
        name = (name or "").lstrip("/") or None
        labels = dict(canonical.get("Labels") or {})
        labels.pop(GPUS_LABEL, None)  # ours: set below to what the body names, never the client's word
        served = labels.pop(SERVED_LABEL, None)
        canonical["Labels"] = labels
        kind = _kind(name, labels)
        if kind == "ticket":
            await self._check_ticket(canonical, name, labels, prefix)
            yield
            return
        if kind == "probe":
            self._check_probe(canonical, name, labels)
        if asked(canonical) is None and not named(canonical):
            yield
            return
        early = referee(canonical, (), self.probe_images)  # a Count, a probe's look-alike: no need to look
        if early:
            raise Refused(403, f"{COLLISION}: " + "; ".join(early))
        if is_probe(canonical, self.probe_images):
            yield  # every GPU for nvidia-smi's query, holding none (no dood.gpus label)
            return
        known = await self.known(prefix)
        problems = canonical_device_ids(
            canonical, known.aliases if known else None, known_as=known.source if known else ""
        )
        if problems:
            raise Refused(403, "the container's GPUs: " + "; ".join(problems))
        ids = named(canonical)
        self._lock = self._lock or asyncio.Lock()
        async with self._lock, self._engine_lock(str(canonical.get("Image") or ""), prefix):
            problems = referee(canonical, await self._holding(prefix), self.probe_images)
            if problems:
                raise Refused(403, f"{COLLISION}: " + "; ".join(problems))
            labels[GPUS_LABEL] = ",".join(ids)
            if served is not None and await self._live_ticket(served, labels.get(STACK_LABEL, ""), prefix):
                labels[SERVED_LABEL] = served
            yield

    # --- the check around a start ---

    @contextlib.asynccontextmanager
    async def starting(self, inspected: Mapping[str, Any], prefix: str) -> AsyncIterator[None]:
        """Around the upstream start of a container (`inspected`: its inspect): when it names GPUs, refuse (403)
        to start it while another container holds one of them (an exited container holds none, so its claim
        lapsed), or when its `dood.gpus` label is not exactly the GPUs it names (what others read it to hold).
        The engine lock is held until the daemon answered, so a concurrent create or start sees it running. A
        container without named GPUs passes untouched: no GPU create is counted but discovery's probe."""
        host_config = inspected.get("HostConfig") or {}
        ids = named({"HostConfig": host_config}) if isinstance(host_config, Mapping) else ()
        if not ids:
            yield
            return
        container_id = str(inspected.get("Id") or "")
        name = str(inspected.get("Name") or container_id[:12]).lstrip("/")
        labels = (inspected.get("Config") or {}).get("Labels") or {}
        if label_ids(labels.get(GPUS_LABEL)) != ids:
            raise Refused(
                403,
                f"refusing to start {name}: its GPUs {list(ids)} (HostConfig.DeviceRequests) are not its label "
                f"{GPUS_LABEL}={labels.get(GPUS_LABEL)!r}, which other claimers read as what it holds; create it "
                "again through dood-proxy",
            )
        self._lock = self._lock or asyncio.Lock()
        async with self._lock, self._engine_lock(str(inspected.get("Image") or ""), prefix):
            others = [holder for holder in await self._holding(prefix) if holder.container_id != container_id]
            taken = held_by(others)
            problems = [f"GPU {gpu} is held by {taken[gpu].describe()}" for gpu in dict.fromkeys(ids) if gpu in taken]
            if problems:
                raise Refused(403, f"refusing to start {name}: {COLLISION}: " + "; ".join(problems))
            yield

    # --- the engine-wide lock ---

    @contextlib.asynccontextmanager
    async def _engine_lock(self, image: str, prefix: str) -> AsyncIterator[str]:
        """Hold `dood-gpu-lock` (the launcher's `EngineLock`, in the proxy's loop): created with the create's
        own image (present, or the create fails alike), never started; a stale one broken by id."""
        lock_id = await self._acquire(image, prefix)
        try:
            yield lock_id
        finally:
            # shielded: a client hanging up must not leave the lock to go stale
            status, _ = await asyncio.shield(self.daemon.call("DELETE", f"{prefix}/containers/{lock_id}?force=1"))
            if status == 404:
                log.warning("The GPU claim lock %s was broken as stale while this proxy held it", lock_id[:12])

    async def _acquire(self, image: str, prefix: str) -> str:
        body = {
            "Image": image,
            "Cmd": ["true"],
            "User": "65534:65534",
            "Labels": {LOCK_LABEL: self.holder},
            "HostConfig": {"SecurityOpt": ["no-new-privileges"], "NetworkMode": "none"},
        }
        sent = json.dumps(body).encode()
        stale = self.inventory.lock_stale_seconds
        started = looked = time.monotonic()
        first_seen: dict[str, float] = {}
        delay = 0.002
        while True:
            status, answer = await self.daemon.call("POST", f"{prefix}/containers/create?name={LOCK_NAME}", sent)
            if status == 201:
                try:
                    return str(json.loads(answer)["Id"])
                except (ValueError, KeyError, TypeError):
                    raise Refused(502, "the daemon's answer to the GPU claim lock's create is not readable") from None
            if status != 409:
                message = daemon_message(answer)
                raise Refused(404 if status == 404 else 502, f"taking the GPU claim lock {LOCK_NAME}: {message}")
            if time.monotonic() - looked >= min(1.0, stale / 3):
                looked = time.monotonic()
                await self._break_if_stale(first_seen, prefix)
            if time.monotonic() - started > stale * 2 + 5:
                raise Refused(503, f"the GPU claim lock {LOCK_NAME} stayed held for {stale * 2 + 5:.0f}s; try again")
            await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter
            delay = min(delay * 2, 0.1)

    async def _break_if_stale(self, first_seen: dict[str, float], prefix: str) -> None:
        """As `EngineLock._break_if_stale`: the same lock container for `lock_stale_seconds` of our clock."""
        status, answer = await self.daemon.call("GET", f"{prefix}/containers/{LOCK_NAME}/json")
        if status != 200:
            return
        try:
            lock_id = str(json.loads(answer)["Id"])
        except (ValueError, KeyError, TypeError):
            return
        seen = first_seen.setdefault(lock_id, time.monotonic())
        if time.monotonic() - seen >= self.inventory.lock_stale_seconds:
            log.warning("Removing the stale GPU claim lock %s", lock_id[:12])
            await self.daemon.call("DELETE", f"{prefix}/containers/{lock_id}?force=1")

    # --- what the engine says ---

    async def _holding(self, prefix: str):
        return holders(await self._list(prefix, [GPUS_LABEL]), created_hold_seconds=self.created_hold_seconds)

    async def _list(self, prefix: str, labels: list[str]) -> list[dict[str, Any]]:
        filters = quote(json.dumps({"label": labels}))
        status, body = await self.daemon.call("GET", f"{prefix}/containers/json?all=1&filters={filters}")
        if status != 200:
            raise Refused(502, f"listing the GPU holders and tickets failed ({status})")
        try:
            listed = json.loads(body)
        except ValueError:
            raise Refused(502, "the daemon's container list is not readable") from None
        return listed if isinstance(listed, list) else []

    async def _daemon_now(self, prefix: str) -> float:
        """Now on the daemon's clock (an offset to ours measured with `GET /info`, every ten minutes)."""
        if self._offset is None or time.monotonic() - self._offset[1] > _CLOCK_SECONDS:
            before = time.time()
            status, body = await self.daemon.call("GET", f"{prefix}/info")
            try:
                system_time = json.loads(body).get("SystemTime") if status == 200 else None
            except (ValueError, AttributeError):
                system_time = None
            self._offset = (offset_of(system_time, before, time.time()), time.monotonic())
        return time.time() + self._offset[0]

    async def _live_ticket(self, key: str, stack: str, prefix: str) -> bool:
        """Whether a live ticket with `key` of `stack` is in the engine."""
        if not KEY_PATTERN.fullmatch(key or ""):
            return False
        listed = await self._list(prefix, [f"{TICKET_LABEL}={key}", f"{STACK_LABEL}={stack}"])
        return bool(tickets(listed, daemon_now=await self._daemon_now(prefix)))

    async def known(self, prefix: str) -> Inventory | None:
        """The inventory: `gpus.devices` of the proxy's config, else GPU discovery's record in the engine
        (the exited container `dood-gpu-probe`: indexes and UUIDs), else None."""
        if self.inventory.devices:
            devices = self.inventory.devices
            return Inventory({gpu: gpu for gpu in devices}, "gpus.devices of dood-proxy's config")
        status, body = await self.daemon.call("GET", f"{prefix}/containers/{PROBE_NAME}/json")
        if status != 200:
            return None
        try:
            probe = json.loads(body)
            probe_id = str(probe["Id"])
        except (ValueError, KeyError, TypeError):
            return None
        if self._probe is None or self._probe[0] != probe_id:
            self._probe = (probe_id, await self._read_probe(probe, prefix))
        return self._probe[1]

    async def _read_probe(self, probe: Mapping[str, Any], prefix: str) -> Inventory | None:
        state, config = probe.get("State") or {}, probe.get("Config") or {}
        image = (config.get("Labels") or {}).get(PROBE_LABEL)
        if not (
            state.get("Status") == "exited"
            and state.get("ExitCode") == 0
            and image == config.get("Image")
            and config.get("Entrypoint") == PROBE_ENTRYPOINT
            and config.get("Cmd") == PROBE_QUERY
        ):
            return None
        status, logs = await self.daemon.call("GET", f"{prefix}/containers/{probe['Id']}/logs?stdout=1")
        if status != 200:
            return None
        try:
            gpus = parse_gpus(_demultiplexed(logs).decode(errors="replace"))
        except ValueError:
            return None
        aliases = {index: index for index, _ in gpus} | {uuid: index for index, uuid in gpus}
        return Inventory(aliases, f"recorded by GPU discovery in {PROBE_NAME}")

    # --- names and labels of dood's own GPU bookkeeping ---

    def _check_probe(self, canonical: Mapping[str, Any], name: str | None, labels: Mapping[str, str]) -> None:
        image = canonical.get("Image")
        if name != PROBE_NAME or labels.get(PROBE_LABEL) != image or not is_probe(canonical, self.probe_images):
            raise Refused(
                403,
                f"name {PROBE_NAME!r} and label {PROBE_LABEL} are GPU discovery's record of the host's GPUs: only its "
                f"exact probe has them (named {PROBE_NAME}, labelled with its image, an image of "
                f"policy.gpu_probe_images {list(self.probe_images)}, the driver's nvidia-smi query, nothing else)",
            )

    async def _check_ticket(
        self, canonical: dict[str, Any], name: str | None, labels: dict[str, str], prefix: str
    ) -> None:
        """A GPU queue ticket exactly as `dood.gpus.queue.ticket_body` makes it, asking for no more GPUs than
        the host has and the policy allows, lasting one lease, keyed now or by a key this stack placed."""
        problems = []
        key = labels.get(TICKET_LABEL) or ""
        match = TICKET_NAME.fullmatch(name or "")
        if not KEY_PATTERN.fullmatch(key):
            problems.append(f"label {TICKET_LABEL}: {key!r} is not a ticket key (20 digits: the daemon's clock in ns)")
        if match is None or match.group(1) != key:
            problems.append(f"name {name!r}: a GPU ticket is named dood-gpu-ticket-<its {TICKET_LABEL}>-<6 hex digits>")
        wants = wants_of(labels.get(TICKET_WANTS_LABEL))
        known = await self.known(prefix)
        size = known.size if known else len(self.inventory.devices)
        limits = [n for n in (size or None, self.max_gpus) if n is not None]
        if wants is None:
            problems.append(
                f"label {TICKET_WANTS_LABEL}: {labels.get(TICKET_WANTS_LABEL)!r} is not a GPU count or 'all'"
            )
        elif wants == "all" and self.max_gpus is not None and not (size and size <= self.max_gpus):
            problems.append(f"label {TICKET_WANTS_LABEL}: 'all' is over policy.max_gpus ({self.max_gpus})")
        elif wants != "all" and limits and wants > min(limits):
            problems.append(
                f"label {TICKET_WANTS_LABEL}: {wants} GPUs; at most {min(limits)} (the host's GPUs: "
                f"{size or 'unknown'}, policy.max_gpus: {self.max_gpus})"
            )
        try:
            until = float(labels.get(TICKET_UNTIL_LABEL) or "")
        except ValueError:
            until = None
            problems.append(f"label {TICKET_UNTIL_LABEL}: {labels.get(TICKET_UNTIL_LABEL)!r} is not a time")
        waiter = labels.get(TICKET_FOR_LABEL, "")
        if not isinstance(waiter, str) or len(waiter) > 1024:
            problems.append(f"label {TICKET_FOR_LABEL}: a task instance (stack/dag/task/run/map), at most 1024 chars")
        extra = sorted(set(labels) - _TICKET_ALLOWED_LABELS)
        if extra:
            problems.append(f"labels {extra}: a ticket has only its own ({sorted(TICKET_LABELS)})")
        problems += _ticket_shape(canonical)
        if problems:
            raise Refused(403, "a GPU queue ticket exactly as dood places it, or none: " + "; ".join(problems))
        now = await self._daemon_now(prefix)
        lease = self.inventory.ticket_lease_seconds
        if until is not None and until > now + lease + UNTIL_SLACK_SECONDS:
            raise Refused(
                403,
                f"label {TICKET_UNTIL_LABEL}: {until:.3f} is more than a lease (gpus.ticket_lease_seconds: {lease}) "
                f"after the daemon's now ({now:.3f}); a ticket lasts one lease and is renewed",
            )
        stack = labels.get(STACK_LABEL, "")
        placed = int(key) / 1e9
        if placed > now + FRESH_KEY_SECONDS or (
            placed < now - FRESH_KEY_SECONDS
            and (stack, key) not in self._keys
            and not await self._live_ticket(key, stack, prefix)
        ):
            raise Refused(
                403,
                f"label {TICKET_LABEL}: {KEY_NOT_CURRENT}: {key} is neither the daemon's now ({now:.0f} s) nor the "
                f"key of a ticket stack {stack!r} placed before; a new waiter's key is the daemon's clock when it asks",
            )
        self._remember(stack, key)

    def _remember(self, stack: str, key: str) -> None:
        self._keys.pop((stack, key), None)
        self._keys[(stack, key)] = time.monotonic()
        while len(self._keys) > _REMEMBERED_KEYS:  # the oldest first (dicts keep insertion order)
            self._keys.pop(next(iter(self._keys)))


def _kind(name: str | None, labels: Mapping[str, str]) -> str:
    """What a create is in GPU bookkeeping: 'ticket', 'probe' or 'plain'; Refused (403) for the lock's name or
    label, any other `dood-gpu…` name, and any `dood.gpu*` label no shape has."""
    if name == LOCK_NAME or LOCK_LABEL in labels:
        raise Refused(
            403,
            f"name {LOCK_NAME!r} / label {LOCK_LABEL}: {PROXY_TAKES_LOCK} around every create that names GPUs; "
            "a client behind it takes none (dood's launcher knows)",
        )
    ticket = (name or "").startswith("dood-gpu-ticket-") or bool(TICKET_LABELS & set(labels))
    probe = name == PROBE_NAME or PROBE_LABEL in labels
    known = {GPUS_LABEL, SERVED_LABEL, PROBE_LABEL, *TICKET_LABELS}
    unknown = sorted(key for key in labels if key.startswith(GPU_LABEL_PREFIX) and key not in known)
    if unknown:
        raise Refused(403, f"labels {unknown}: {GPU_LABEL_PREFIX}* labels are dood's GPU bookkeeping; drop them")
    if ticket and probe:
        raise Refused(403, "a create is a GPU ticket or GPU discovery's probe, not both")
    if ticket:
        return "ticket"
    if probe:
        return "probe"
    # Any other dood-… name (`dood-gpu…` included: a DAG id may start with `gpu`) is a task container's, which
    # `proxy.identity.check_name` holds to the name its task labels give.
    return "plain"


def _ticket_shape(body: Mapping[str, Any]) -> list[str]:
    """What a ticket's body sets beyond a never-started placeholder's (image, `true`, user, labels)."""
    problems = []
    extra = sorted(key for key, value in body.items() if key not in _TICKET_KEYS and value)
    if extra:
        problems.append(f"fields {extra}: a ticket sets only {sorted(_TICKET_KEYS)}")
    if body.get("Cmd") != ["true"]:
        problems.append(f"Cmd {body.get('Cmd')!r}: a ticket's is ['true']")
    host = body.get("HostConfig") or {}
    extra_host = sorted(key for key, value in host.items() if key not in _TICKET_HOST_KEYS and value)
    if extra_host:
        problems.append(f"HostConfig {extra_host}: a ticket sets none of them")
    return problems


def _demultiplexed(raw: bytes) -> bytes:
    """A non-TTY container's log stream without its 8-byte frame headers (stdout and stderr frames)."""
    out, position = bytearray(), 0
    while position + 8 <= len(raw) and raw[position] in (0, 1, 2) and raw[position + 1 : position + 4] == b"\0\0\0":
        size = int.from_bytes(raw[position + 4 : position + 8], "big")
        out += raw[position + 8 : position + 8 + size]
        position += 8 + size
    return bytes(out) if position else raw
