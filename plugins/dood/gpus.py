"""GPUs of the Docker host: the inventory (`gpus:` in the dood config) and who holds which, read from the engine.

Docker turns `DeviceRequests: [{Count: N}]` into GPUs `0 … N-1`, always: two `gpus: 1` trainings both land
on GPU 0. dood therefore creates every GPU container with explicit `DeviceIDs`, chosen among the GPUs no
other container holds, and labels it `dood.gpus=<ids>`. The engine is the only record: a container holds
its GPUs while it is running (or paused, restarting, or freshly created), and holds nothing once it has
ended, whatever ended it. Everything here is pure (decides, touches nothing); `dood.gpu_claims` talks to
the engine, `dood.proxy.gpus` referees creates passing through dood-proxy.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: The GPUs a container was created with (comma-separated DeviceIDs); forced by dood-proxy.
GPUS_LABEL = "dood.gpus"
#: States in which a container holds its GPUs ("created" only for `created_hold_seconds`).
RUNNING_STATES = frozenset({"running", "restarting", "paused"})

Asked = int | Literal["all"]
#: How dood-proxy's refusal of a colliding GPU request begins; each held GPU then reads "GPU <id> is held by".
COLLISION = "the container's GPUs would collide"
_HELD = re.compile(r"GPU (\S+) is held by")


class GpuInventory(BaseModel):
    """The GPUs of the Docker host behind `docker.url`, and how claims on them are taken."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    devices: tuple[str, ...] = Field(
        default=(),
        description=(
            "The host's GPUs as the nvidia driver names them: indexes ('0', '1') or UUIDs ('GPU-…'), one naming "
            "for all. Containers asking for GPUs get DeviceIDs from this list; empty: GPU requests are refused."
        ),
        examples=[["0", "1", "2", "3"]],
    )
    wait_recheck_seconds: float = Field(
        default=10,
        gt=0,
        description=(
            "A task waiting for GPUs wakes on the engine's die/destroy events; it also looks again after this "
            "long without one (a missed event costs at most this)."
        ),
    )
    lock_stale_seconds: float = Field(
        default=30,
        gt=0,
        description=(
            "The claim lock (a container named dood-gpu-lock) is held for one list-and-create, well under a "
            "second; one older than this was left by a holder that died, and is removed."
        ),
    )
    ticket_lease_seconds: float = Field(
        default=120,
        gt=0,
        description=(
            "A waiter's place in the queue (a ticket: a created, never started container) is renewed a third of "
            "this into it; one not renewed for this long belongs to a waiter that died, and no longer counts."
        ),
    )
    created_hold_seconds: float = Field(
        default=120,
        ge=0,
        description=(
            "A container created but never started holds its GPUs this long: its creator starts it at once, "
            "unless it died between create and start (the janitor removes such leftovers)."
        ),
    )

    @field_validator("devices", mode="before")
    @classmethod
    def _ids(cls, value: object) -> object:
        if isinstance(value, (str, int)):
            raise ValueError("must be a list of GPU ids, e.g. ['0', '1'] or ['GPU-8f6…']")
        if not isinstance(value, Iterable):
            return value
        ids = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, (str, int)):
                raise ValueError(f"{item!r}: a GPU id is an index or a UUID")
            text = str(item).strip()
            if not text or "," in text or text.lower() == "all":
                raise ValueError(f"{item!r}: one GPU per entry (no commas, not 'all')")
            if text in ids:
                raise ValueError(f"{text!r} is listed twice")
            ids.append(text)
        return tuple(ids)


@dataclass(frozen=True)
class Holder:
    """A container holding GPUs, as the engine lists it."""

    container_id: str
    name: str
    state: str
    gpus: tuple[str, ...]
    labels: Mapping[str, str]

    def describe(self) -> str:
        """`dag/task/run try N (container, state)`, or the container alone when it is no task's."""
        labels = self.labels
        where = f"{self.name}, {self.state}"
        if labels.get("dood.dag_id"):
            task = "/".join(labels.get(k, "?") for k in ("dood.dag_id", "dood.task_id", "dood.run_id"))
            index = labels.get("dood.map_index", "-1")
            mapped = f"[{index}]" if index not in ("", "-1") else ""
            return f"{task}{mapped} try {labels.get('dood.try_number', '?')} ({where})"
        return where


def label_ids(value: str | None) -> tuple[str, ...]:
    """GPU ids of a `dood.gpus` label value (or of DeviceIDs joined by commas, as the engine joins them)."""
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


def holders(containers: Iterable[Mapping[str, Any]], *, created_hold_seconds: float, now: float | None = None):
    """The containers (entries of `GET /containers/json?all=1`) that hold GPUs now."""
    now = time.time() if now is None else now
    found = []
    for container in containers:
        labels = container.get("Labels") or {}
        ids = label_ids(labels.get(GPUS_LABEL))
        state = container.get("State") or ""
        fresh = state == "created" and now - float(container.get("Created") or 0) < created_hold_seconds
        if ids and (state in RUNNING_STATES or fresh):
            names = container.get("Names") or ["/" + container["Id"][:12]]
            found.append(Holder(container["Id"], names[0].lstrip("/"), state, ids, labels))
    return found


def held_by(holding: Iterable[Holder]) -> dict[str, Holder]:
    """GPU id -> the container holding it."""
    return {gpu: holder for holder in holding for gpu in holder.gpus}


# --- what a create body asks for ---


def _gpu_requests(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    requests = (body.get("HostConfig") or {}).get("DeviceRequests") or []
    return [r for r in requests if isinstance(r, Mapping) and any("gpu" in c for c in r.get("Capabilities") or [])]


def asked(body: Mapping[str, Any]) -> Asked | None:
    """How many GPUs a create body asks for without naming them (`Count`; -1 is 'all'); None: no such request."""
    total = 0
    for request in _gpu_requests(body):
        if request.get("DeviceIDs"):
            continue
        count = request.get("Count") or 0
        if count == -1:
            return "all"
        total += count
    return total or None


def named(body: Mapping[str, Any]) -> tuple[str, ...]:
    """The GPUs a create body names (`DeviceIDs`)."""
    return tuple(gpu for r in _gpu_requests(body) for entry in r.get("DeviceIDs") or [] for gpu in label_ids(entry))


def choose(devices: Sequence[str], taken: Iterable[str], wanted: Asked) -> tuple[str, ...] | None:
    """The first `wanted` free GPUs of the inventory (all of them for 'all'); None while too few are free."""
    taken = set(taken)
    if wanted == "all":
        return tuple(devices) if devices and not taken.intersection(devices) else None
    free = [gpu for gpu in devices if gpu not in taken]
    return tuple(free[:wanted]) if len(free) >= wanted else None


def claimed_body(body: Mapping[str, Any], ids: Sequence[str], *, ticket: str | None = None) -> dict[str, Any]:
    """The body with its counted GPU request(s) replaced by one naming `ids`, and labelled `dood.gpus` (and
    `dood.gpu_served` with the waiter's ticket, which that label marks as served)."""
    claimed = copy.deepcopy(dict(body))
    host = claimed.setdefault("HostConfig", {})
    requests = host.get("DeviceRequests") or []
    counted = [r for r in _gpu_requests(claimed) if not r.get("DeviceIDs")]
    template = dict(counted[0]) if counted else {"Driver": "", "Capabilities": [["gpu"]], "Options": {}}
    kept = [r for r in requests if not any(r is c for c in counted)]
    host["DeviceRequests"] = [*kept, {**template, "Count": 0, "DeviceIDs": list(ids)}]
    claimed["Labels"] = {**(claimed.get("Labels") or {}), GPUS_LABEL: ",".join(ids)}
    if ticket:
        claimed["Labels"][SERVED_LABEL] = ticket
    return claimed


def never_fits(devices: Sequence[str], wanted: Asked) -> str | None:
    """Why this request can never be granted on this inventory, or None."""
    if not devices:
        return (
            "the dood config lists no GPUs of the Docker host: set gpus.devices (e.g. ['0', '1']) to the ids the "
            "nvidia driver shows there (nvidia-smi -L)"
        )
    if wanted != "all" and wanted > len(devices):
        return f"asks for {wanted} GPUs; the Docker host has {len(devices)} (gpus.devices: {list(devices)})"
    return None


def referee(body: Mapping[str, Any], holding: Iterable[Holder]) -> list[str]:
    """Why a create must be refused so that no two containers share a GPU (dood-proxy's check): a count the
    engine would turn into GPUs 0…N-1 whoever holds them, or GPUs another container holds."""
    problems = []
    if asked(body) is not None:
        problems.append(
            "DeviceRequests: a GPU Count without DeviceIDs gets GPUs 0…N-1 whoever holds them; name free GPUs "
            "in DeviceIDs (dood's launcher claims them for you)"
        )
    ids = named(body)
    if len(set(ids)) != len(ids):
        problems.append(f"DeviceRequests: GPUs {list(ids)} name one GPU twice")
    taken = held_by(holding)
    for gpu in dict.fromkeys(ids):
        if gpu in taken:
            problems.append(f"GPU {gpu} is held by {taken[gpu].describe()}")
    return problems


def refused_as_held(message: str) -> tuple[str, ...] | None:
    """The GPUs dood-proxy named as held when it refused a create for a collision (None: no such refusal).
    Behind a stack's proxy, holders of other stacks are not listed to us; the referee still sees them."""
    if COLLISION not in message:
        return None
    return tuple(_HELD.findall(message))


# --- the queue of waiters: first come, first served ---

#: On a ticket (a created, never started placeholder container): the waiter's place, the daemon's clock in
#: nanoseconds when it first asked, zero-padded so that names and strings sort as numbers.
TICKET_LABEL = "dood.gpu_ticket"
#: On a ticket: what its waiter asks for ('1', '2', 'all').
TICKET_WANTS_LABEL = "dood.gpu_wants"
#: On a ticket: the daemon's clock (epoch seconds) after which nobody renewed it: its waiter is gone.
TICKET_UNTIL_LABEL = "dood.gpu_ticket_until"
#: On a ticket: the task instance waiting (stack/dag/task/run/map), so a later try takes its place again.
TICKET_FOR_LABEL = "dood.gpu_ticket_for"
#: On a claim holder: the ticket it was claimed with (that ticket is served, even before it is removed).
SERVED_LABEL = "dood.gpu_served"


def ticket_key(daemon_ns: int) -> str:
    return f"{daemon_ns:020d}"


def waiter_of(labels: Mapping[str, str]) -> str:
    """Who waits, from a create body's labels: the task instance (every try alike), or '' for no task's."""
    if not labels.get("dood.dag_id"):
        return ""
    keys = ("dood.stack", "dood.dag_id", "dood.task_id", "dood.run_id", "dood.map_index")
    return "/".join(labels.get(key, "") for key in keys)


@dataclass(frozen=True)
class Ticket:
    """One waiter's place in the queue of a Docker host's GPUs."""

    container_id: str
    key: str
    wants: Asked
    until: float
    waiter: str


def _wants(value: str | None) -> Asked | None:
    if value == "all":
        return "all"
    try:
        number = int(value or "")
    except ValueError:
        return None
    return number if number > 0 else None


def tickets(containers: Iterable[Mapping[str, Any]], *, daemon_now: float) -> list[Ticket]:
    """The live tickets (entries of `GET /containers/json?all=1`), oldest first; one per key (a renewal
    briefly leaves two), expired ones (`until` passed: nobody renews them) left out."""
    by_key: dict[str, Ticket] = {}
    for container in containers:
        labels = container.get("Labels") or {}
        key, wants = labels.get(TICKET_LABEL), _wants(labels.get(TICKET_WANTS_LABEL))
        try:
            until = float(labels.get(TICKET_UNTIL_LABEL) or 0)
        except ValueError:
            until = 0.0
        if not key or wants is None or until <= daemon_now:
            continue
        ticket = Ticket(container["Id"], key, wants, until, labels.get(TICKET_FOR_LABEL, ""))
        if key not in by_key or by_key[key].until < until:
            by_key[key] = ticket
    return sorted(by_key.values(), key=lambda t: t.key)


def expired(containers: Iterable[Mapping[str, Any]], *, daemon_now: float) -> list[str]:
    """Ids of tickets nobody renewed in time (their waiter died): anyone may remove them."""
    found = []
    for container in containers:
        labels = container.get("Labels") or {}
        try:
            until = float(labels.get(TICKET_UNTIL_LABEL) or 0)
        except ValueError:
            until = 0.0
        if labels.get(TICKET_LABEL) and until <= daemon_now:
            found.append(container["Id"])
    return found


def served(
    devices: Sequence[str], holding: Iterable[Holder], queue: Iterable[Ticket], *, key: str, wanted: Asked
) -> tuple[str, ...] | None:
    """The GPUs the waiter with ticket `key` may claim now, strictly first come, first served: the older
    waiters take theirs first, in order; the first one that does not fit stops everyone behind it (so a
    request for all GPUs is not starved by a stream of small ones). None: not this waiter's turn yet.

    `key` need not be in the queue: a newcomer asks with a key later than everyone's."""
    holding = list(holding)
    taken = set(held_by(holding))
    done = {h.labels.get(SERVED_LABEL) for h in holding} - {None}  # claimed, ticket not yet removed
    for ticket in queue:
        if ticket.key >= key:
            break
        if ticket.key in done:
            continue
        ids = choose(devices, taken, ticket.wants)
        if ids is None:
            return None
        taken.update(ids)
    return choose(devices, taken, wanted)


def ahead_of(queue: Iterable[Ticket], key: str) -> int:
    """How many waiters are before `key`."""
    return sum(1 for ticket in queue if ticket.key < key)


class Wakeup:
    """When a waiter should look again, from the engine's container events alone (no API call).

    After a look it knows how many GPUs were free and how many the older waiters and itself need. Each
    event then moves that estimate: a holder's die/destroy frees its GPUs (once per container), a holder's
    create takes them, an older ticket's destroy lowers the need. Only when the estimate says it may be
    its turn does it look again (two list calls). With 50 waiters and one GPU freed, one waiter looks, not
    50. A release no event shows (a created holder outliving `created_hold_seconds`, a ticket's lease
    running out) waits for the bounded re-check."""

    def __init__(self, devices: Sequence[str], key: str, wanted: Asked, *, ended: set[str] | None = None) -> None:
        self.devices = tuple(devices)
        self.key = key
        self.mine = len(self.devices) if wanted == "all" else int(wanted)
        # ids of holders seen dying: the engine's list can still show one running right after its die
        # event, so a look must leave them out (`still_holding`) or it would miss the release
        self.ended = ended if ended is not None else set()
        self.looked(holding=[], queue=[])

    def looked(self, holding: Iterable[Holder], queue: Iterable[Ticket]) -> None:
        holding = list(holding)
        taken = set(held_by(holding)) & set(self.devices)
        done = {h.labels.get(SERVED_LABEL) for h in holding} - {None}
        self.free = len(self.devices) - len(taken)
        self.need = self.mine + sum(
            len(self.devices) if t.wants == "all" else int(t.wants)
            for t in queue
            if t.key < self.key and t.key not in done
        )
        self._released: set[str] = set()
        # created before the look (the stream opens first, so their create events may still come): counted
        self._taken: set[str] = {h.container_id for h in holding}
        self._left: set[str] = set()

    def saw(self, event: Mapping[str, Any]) -> bool:
        """Take one event of `GET /events` into account; True when it is worth looking again."""
        if event.get("Type") != "container":
            return False
        action = event.get("Action") or event.get("status") or ""
        actor = event.get("Actor") or {}
        attributes = actor.get("Attributes") or {}
        container = actor.get("ID") or event.get("id") or ""
        gpus = [gpu for gpu in label_ids(attributes.get(GPUS_LABEL)) if gpu in self.devices]
        key = attributes.get(TICKET_LABEL)
        if gpus:
            if action in ("die", "destroy") and container not in self._released:
                self._released.add(container)
                self.ended.add(container)
                self.free += len(gpus)
            elif action == "create" and container not in self._taken:
                self._taken.add(container)
                self.free -= len(gpus)
                served_key = attributes.get(SERVED_LABEL)
                if served_key and served_key < self.key and served_key not in self._left:
                    self._left.add(served_key)  # its waiter is served: its need is now a holding
                    self.need -= _count_of(attributes.get(TICKET_WANTS_LABEL), len(gpus), self.devices)
        elif key and key < self.key and action == "destroy" and key not in self._left:
            # an older waiter left (served, timed out, killed) or renewed; look again only if it could matter
            self._left.add(key)
            self.need -= _count_of(attributes.get(TICKET_WANTS_LABEL), 0, self.devices)
        else:
            return False
        return self.free >= self.need


def still_holding(holding: Iterable[Holder], ended: set[str]) -> list[Holder]:
    """The holders, less those whose die or destroy event was seen (the list may lag behind the events)."""
    return [holder for holder in holding if holder.container_id not in ended]


def _count_of(wants: str | None, default: int, devices: Sequence[str]) -> int:
    value = _wants(wants)
    if value is None:
        return default
    return len(devices) if value == "all" else value


def ticket_body(
    *, image: str, user: str | None, key: str, wanted: Asked, until: float, waiter: str, labels: Mapping[str, str]
) -> dict[str, Any]:
    """The create body of a ticket: never started (no process, a few KiB), the step's own image and user so
    it passes dood-proxy's policy like the step would."""
    return {
        "Image": image,
        "Cmd": ["true"],
        "User": user or "65534:65534",
        "Labels": {
            **labels,
            TICKET_LABEL: key,
            TICKET_WANTS_LABEL: str(wanted),
            TICKET_UNTIL_LABEL: f"{until:.3f}",
            TICKET_FOR_LABEL: waiter,
        },
        "HostConfig": {"SecurityOpt": ["no-new-privileges"]},
    }
