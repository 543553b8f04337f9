"""Claiming GPUs on the Docker host: atomic across processes, first come first served, the engine the only record.

A claim is a container created with explicit `DeviceIDs` and the label `dood.gpus=<ids>`; it ends when
that container ends, by any path (exit, kill, OOM, `rm -f`, janitor, engine restart), because holdings
are read from the engine's container list every time (`dood.gpus.holders`). What must be atomic is
"look at the holdings, then create": two processes looking at once would pick the same free GPU. That
window is closed by a lock the engine itself provides: a container *name* is reserved atomically by the
daemon, so of all processes creating `dood-gpu-lock` exactly one succeeds (the others get 409) until it is
removed again. The lock is held for one list-and-create (tens of milliseconds); a lock left by a holder
that died is broken after `gpus.lock_stale_seconds`, and a holder whose lock was broken meanwhile takes its
create back (see `_claim`), so even a broken lock never yields two holders of one GPU.

Waiters queue: a task that finds too few free GPUs (or older waiters) places a *ticket* in the engine, a
created, never started container labelled with the daemon's clock when it first asked (`dood.gpus`'s
`Ticket`). Freed GPUs go to the oldest tickets first (`dood.gpus.served`); only a waiter whose turn it is
takes the lock. Waiters sleep on the engine's container events and look again (two list calls) only when
the events say it may be their turn (`dood.gpus.Wakeup`), with a bounded re-check every
`gpus.wait_recheck_seconds`. A ticket is renewed while its waiter lives; one nobody renews for
`gpus.ticket_lease_seconds` no longer counts (its waiter died). With `wait=False` (deferrable tasks) the
waiter leaves its ticket in place and raises `GpusBusy`: the triggerer waits (`dood.triggers.gpus`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import requests
from docker.errors import APIError, DockerException, NotFound

from dood.exceptions import DoodConfigError, DoodError
from dood.gpus import (
    GPUS_LABEL,
    TICKET_FOR_LABEL,
    TICKET_LABEL,
    Holder,
    Wakeup,
    ahead_of,
    asked,
    claimed_body,
    expired,
    held_by,
    holders,
    never_fits,
    refused_as_held,
    served,
    still_holding,
    ticket_body,
    ticket_key,
    tickets,
    waiter_of,
)
from dood.naming import MANAGED_LABEL

if TYPE_CHECKING:
    from docker import APIClient

    from dood.config import DoodConfig
    from dood.gpus import Asked, GpuInventory, Ticket

log = logging.getLogger(__name__)
LOCK_NAME = "dood-gpu-lock"
LOCK_LABEL = "dood.gpu_lock"  # value: who holds it, host:pid
WATCHED = ("create", "die", "destroy")
GIVE_UP_EVERY_SECONDS = 0.1  # how often a task waiting for the claim lock looks whether it is still its turn
UNREACHABLE_SECONDS = 120  # how long the engine may stay out of reach (a restart) before a claim gives up
_CLOCK_OFFSETS: dict[str, float] = {}  # Docker URL -> daemon clock minus ours, measured once per process


class GpusUnavailable(DoodError):
    """The GPUs did not free up before the task's deadline (its execution_timeout)."""


class GpusBusy(DoodError):
    """Too few free GPUs now (or older waiters first) and the task waits elsewhere (deferrable): its ticket
    stays in the queue, `ticket` names it."""

    def __init__(self, message: str, *, ticket: str, wanted: Asked) -> None:
        super().__init__(message)
        self.ticket = ticket
        self.wanted = wanted


class EngineLock:
    """A mutex shared by every process using one Docker engine: the container name `dood-gpu-lock`.

    The lock container is only ever created, never started (it costs a name and a few KiB). Its image and
    user are the step's own, so the create passes dood-proxy's policy like the step's would.
    """

    def __init__(
        self, api: APIClient, *, image: str, user: str | None, stale_seconds: float, name: str = LOCK_NAME
    ) -> None:
        self.api = api
        self.name = name
        self.stale_seconds = stale_seconds
        self._body: dict[str, Any] = {
            "Image": image,
            "Cmd": ["true"],
            "User": user or "65534:65534",
            "Labels": {MANAGED_LABEL: "true", LOCK_LABEL: f"{socket.gethostname()}:{os.getpid()}"},
            "HostConfig": {"SecurityOpt": ["no-new-privileges"]},
        }

    @contextlib.contextmanager
    def held(self, deadline: float | None = None, *, give_up: Callable[[], bool] | None = None) -> Iterator[str | None]:
        lock_id = self.acquire(deadline, give_up=give_up)
        try:
            yield lock_id
        finally:
            if lock_id is not None:
                self.release(lock_id)

    def acquire(self, deadline: float | None = None, *, give_up: Callable[[], bool] | None = None) -> str | None:
        """Create the lock container; while another holds it, retry (a few ms apart: it is held briefly).
        None as soon as `give_up()` says it is no longer worth having (what we wanted was taken meanwhile)."""
        delay = 0.002
        first_seen: dict[str, float] = {}
        looked_stale = looked_give_up = time.monotonic()
        while True:
            try:
                return self.api.create_container_from_config(self._body, name=self.name)["Id"]
            except APIError as exc:
                if exc.status_code != 409:
                    raise
            if time.monotonic() - looked_stale >= min(1.0, self.stale_seconds / 3):
                looked_stale = time.monotonic()
                self._break_if_stale(first_seen)
            if deadline is not None and time.time() > deadline:
                raise GpusUnavailable(f"the GPU claim lock {self.name} stayed held until the task's deadline")
            if give_up is not None and time.monotonic() - looked_give_up >= GIVE_UP_EVERY_SECONDS:
                looked_give_up = time.monotonic()
                if give_up():  # two list calls: not after every 409 of a herd of newcomers
                    return None
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.1)

    def holds(self, lock_id: str) -> bool:
        """Whether `lock_id` is still the lock (nobody broke it as stale meanwhile)."""
        try:
            return self.api.inspect_container(self.name)["Id"] == lock_id
        except NotFound:
            return False

    def release(self, lock_id: str) -> None:
        self.released(lock_id)

    def released(self, lock_id: str) -> bool:
        """Remove the lock `lock_id`; False when it was gone already (broken as stale by another)."""
        try:
            self.api.remove_container(lock_id, force=True)
        except NotFound:
            return False
        return True

    def _break_if_stale(self, first_seen: dict[str, float]) -> None:
        """Remove a lock that has been the same container for `stale_seconds` of *our* clock (no clock skew
        between hosts matters): its holder died inside its list-and-create. Removed by id, so a fresh lock
        taken meanwhile by someone else is never touched."""
        try:
            lock_id = self.api.inspect_container(self.name)["Id"]
        except NotFound:
            return
        seen = first_seen.setdefault(lock_id, time.monotonic())
        if time.monotonic() - seen >= self.stale_seconds:
            log.warning("Removing the stale GPU claim lock %s (held for over %ss)", lock_id[:12], self.stale_seconds)
            self.release(lock_id)


class GpuClaims:
    """Creates GPU containers with GPUs nobody else holds; waiters are served in the order they asked.

    :param ticket: the key of this task's ticket from an earlier wait (a deferred task resuming): its place.
    :param wait: False raises `GpusBusy` instead of waiting (the ticket stays, for the triggerer to wait on).
    """

    def __init__(
        self,
        api: APIClient,
        inventory: GpuInventory,
        *,
        host: str,
        image: str,
        user: str | None = None,
        emit: Callable[[str], None] | None = None,
        deadline: float | None = None,
        ticket: str | None = None,
        wait: bool = True,
    ) -> None:
        self.api = api
        self.inventory = inventory
        self.host = host
        self.image = image
        self.user = user
        self.lock = EngineLock(api, image=image, user=user, stale_seconds=inventory.lock_stale_seconds)
        self.emit = emit or log.info
        self.deadline = deadline
        self.ticket = ticket
        self.wait = wait
        self.claimed: tuple[str, ...] = ()
        self._ended: set[str] = set()  # holders whose die/destroy this waiter saw (`dood.gpus.still_holding`)

    @classmethod
    def of(cls, api: APIClient, config: DoodConfig, **kwargs: Any) -> GpuClaims:
        return cls(api, config.gpus, host=config.docker.url, **kwargs)

    # --- claiming ---

    def create(self, body: Mapping[str, Any], create: Callable[[dict[str, Any]], str]) -> str:
        """`create(body)` itself when the body asks for no GPU by count; otherwise, under the lock, with its
        count turned into free `DeviceIDs` (and the `dood.gpus` label), once it is this task's turn."""
        wanted = asked(body)
        if wanted is None:
            return create(dict(body))
        why = never_fits(self.inventory.devices, wanted)
        if why:
            raise DoodConfigError(f"resources.gpus: {why}")
        labels = dict(body.get("Labels") or {})
        waiter = waiter_of(labels)
        queued = _Queued(self, wanted, waiter, labels)
        busy = False
        try:
            return self._create_in_turn(body, create, wanted, queued)
        except GpusBusy:
            busy = True
            raise
        finally:
            if not busy:
                # a deferrable task's process ends soon (it defers again, for the container): leave at once
                queued.leave(in_thread=self.wait)

    def _create_in_turn(
        self, body: Mapping[str, Any], create: Callable[[dict[str, Any]], str], wanted: Asked, queued: _Queued
    ) -> str:
        announced: tuple[str, ...] | None = None
        unseen: set[str] = set()  # GPUs dood-proxy said are held by containers not listed to us
        failures, failing_since = 0, None
        while True:
            try:
                with self._events() as events:  # subscribed before looking: no release is missed
                    while True:  # look, claim or wait for an event that may make it our turn; again
                        holding, queue = self._look(unseen)
                        key = queued.key or ticket_key(self._daemon_ns())  # a newcomer comes after everyone
                        if served(self.inventory.devices, holding, queue, key=key, wanted=wanted) is not None:
                            container_id = self._claim(body, create, wanted, key if queued.key else None, unseen)
                            if container_id is not None:
                                return container_id
                            continue  # taken first by another: look again (then wait)
                        queued.place(queue)
                        described = tuple(sorted({h.describe() for h in holding}))
                        if described != announced:
                            announced = described
                            self.emit(self._waiting_line(wanted, holding, ahead_of(queue, queued.key)))
                        if not self.wait:
                            raise GpusBusy(
                                f"{_count(wanted)} not free on host {self.host}: waiting deferred, ticket {queued.key}",
                                ticket=queued.key,
                                wanted=wanted,
                            )
                        self._check_deadline()
                        wakeup = Wakeup(self.inventory.devices, queued.key, wanted, ended=self._ended)
                        wakeup.looked(holding, queue)
                        if not any(wakeup.saw(event) for event in events):
                            break  # the stream's window ended (re-check, renewal, deadline): open another
                failures, failing_since = 0, None
                unseen.clear()
            except APIError:
                raise
            except (DockerException, requests.RequestException, OSError) as exc:
                # the engine restarting, or out of reach a moment: try again (its containers' claims ended)
                failures += 1
                failing_since = failing_since or time.monotonic()
                self._check_deadline()
                if time.monotonic() - failing_since > UNREACHABLE_SECONDS:
                    raise DoodError(f"Docker at {self.host} stayed unreachable while claiming GPUs: {exc}") from exc
                delay = min(0.1 * 2**failures, 1.0) * (0.5 + random.random() / 2)
                log.warning("Claiming GPUs on %s: %s; again in %.1fs", self.host, exc, delay)
                time.sleep(delay)

    def _waiting_line(self, wanted: Asked, holding: list[Holder], ahead: int) -> str:
        queue = f"; {ahead} waiter{'s' if ahead != 1 else ''} before it" if ahead else ""
        return (
            f"Waiting for {_count(wanted)} on host {self.host} ({len(self.inventory.devices)} in all{queue}); "
            f"held by: {'; '.join(_by_gpu(holding)) or 'nobody (re-checking)'}"
        )

    def _claim(
        self,
        body: Mapping[str, Any],
        create: Callable[[dict[str, Any]], str],
        wanted: Asked,
        ticket: str | None,
        unseen: set[str],
    ) -> str | None:
        """Under the lock: look again and create with this waiter's GPUs; None when it is not its turn after
        all. Waiting for the lock stops as soon as an unlocked look shows them taken (no herd behind it)."""
        devices = self.inventory.devices

        def pick() -> tuple[str, ...] | None:
            holding, queue = self._look(unseen)
            key = ticket or ticket_key(self._daemon_ns())
            return served(devices, holding, queue, key=key, wanted=wanted)

        while True:
            lock_id = self.lock.acquire(self.deadline, give_up=lambda: pick() is None)
            if lock_id is None:
                return None
            try:
                ids = pick()
                if ids is None:
                    self.lock.release(lock_id)
                    return None
                container_id = create(claimed_body(body, ids, ticket=ticket))
            except APIError as exc:
                self.lock.release(lock_id)
                held = refused_as_held(str(exc.explanation or ""))
                if exc.status_code != 403 or held is None:
                    raise
                unseen.update(held or ids)
                return None
            except BaseException:
                self.lock.release(lock_id)
                raise
            if self.lock.released(lock_id):  # one call: unlocks, and says it was still ours
                self.claimed = ids
                self.emit(f"Claimed GPU(s) {','.join(ids)} on host {self.host} (label {GPUS_LABEL})")
                return container_id
            # Our lock was broken as stale while we created: someone may have picked the same GPUs.
            self.api.remove_container(container_id, force=True)

    # --- the engine's view ---

    def holding(self) -> list[Holder]:
        listed = self.api.containers(all=True, filters={"label": [GPUS_LABEL]})
        return holders(listed, created_hold_seconds=self.inventory.created_hold_seconds)

    def queue(self) -> list[Ticket]:
        return tickets(self._tickets_listed(), daemon_now=self._daemon_ns() / 1e9)

    def _tickets_listed(self) -> list[dict[str, Any]]:
        return self.api.containers(all=True, filters={"label": [TICKET_LABEL]})

    def _look(self, unseen: set[str]) -> tuple[list[Holder], list[Ticket]]:
        holding = still_holding(self.holding(), self._ended)
        if unseen:
            holding.append(Holder("", "(another stack's, hidden by dood-proxy)", "running", tuple(unseen), {}))
        return holding, self.queue()

    @contextlib.contextmanager
    def _events(self) -> Iterator[Iterator[Mapping[str, Any]]]:
        """The engine's container create/die/destroy events from now on, until the re-check interval (or the
        deadline) ends; opened before looking, so a release in between is still seen. Every container's:
        the engine's label filters all have to match, and holders and tickets carry different labels."""
        inventory = self.inventory
        until = time.time() + min(inventory.wait_recheck_seconds, inventory.ticket_lease_seconds / 3)
        if self.deadline is not None:
            until = max(min(until, self.deadline), time.time() + 0.05)
        stream = self.api.events(
            until=f"{until + self._clock_offset():.9f}",  # the daemon's clock
            filters={"type": ["container"], "event": list(WATCHED)},
            decode=True,
        )
        try:
            yield iter(stream)
        finally:
            stream.close()

    def _check_deadline(self) -> None:
        if self.deadline is not None and time.time() >= self.deadline:
            raise GpusUnavailable(
                f"no GPUs freed on host {self.host} before the task's deadline (execution_timeout); "
                "see `dood-gpus` for who holds them"
            )

    def _clock_offset(self) -> float:
        """Daemon clock minus ours (tickets and the event window are in the daemon's time; hosts may differ)."""
        if self.host not in _CLOCK_OFFSETS:
            before = time.time()
            daemon = _rfc3339(self.api.info().get("SystemTime"))
            after = time.time()
            _CLOCK_OFFSETS[self.host] = 0.0 if daemon is None else daemon - (before + after) / 2
        return _CLOCK_OFFSETS[self.host]

    def _daemon_ns(self) -> int:
        return time.time_ns() + int(self._clock_offset() * 1e9)


class _Queued:
    """This waiter's ticket: placed when it must wait, renewed while it waits, removed when it leaves."""

    def __init__(self, claims: GpuClaims, wanted: Asked, waiter: str, labels: Mapping[str, str]) -> None:
        self.claims = claims
        self.wanted = wanted
        self.waiter = waiter
        self.labels = {k: v for k, v in labels.items() if k in (MANAGED_LABEL, "dood.stack")}
        self.key: str | None = claims.ticket
        self.until = 0.0
        self.ids: set[str] = set()

    def place(self, queue: list[Ticket]) -> None:
        """Take a place (an earlier try's of this same task instance, if it left one), or renew ours once a
        third of its lease has passed."""
        lease = self.claims.inventory.ticket_lease_seconds
        mine = [t for t in queue if t.key == self.key] if self.key else []
        if self.key is None and self.waiter:
            earlier = [t for t in queue if t.waiter == self.waiter]
            if earlier:
                self.key, mine = earlier[0].key, earlier[:1]
        if self.key is None:
            self.key = ticket_key(self.claims._daemon_ns())
        now = self.claims._daemon_ns() / 1e9
        if mine and (self.until or mine[0].until) - now > lease * 2 / 3:
            self.until = self.until or mine[0].until
            self.ids.add(mine[0].container_id)
            return
        api = self.claims.api
        self.until = now + lease
        body = ticket_body(
            image=self.claims.image,
            user=self.claims.user,
            key=self.key,
            wanted=self.wanted,
            until=self.until,
            waiter=self.waiter,
            labels=self.labels,
        )
        name = f"dood-gpu-ticket-{self.key}-{random.randrange(16**6):06x}"
        created = api.create_container_from_config(body, name=name)["Id"]
        older = [t.container_id for t in mine] + sorted(self.ids)
        self.ids = {created}
        for container_id in older:  # the renewed one(s): the new ticket is in place first
            _remove(api, container_id)
        for container_id in expired(self.claims._tickets_listed(), daemon_now=now):
            _remove(api, container_id)  # tickets of waiters that died

    def leave(self, *, in_thread: bool = True) -> None:
        """Remove this waiter's ticket(s), in a thread by default: a served waiter need not wait for it (its
        holder's `dood.gpu_served` label already tells everyone it was served)."""
        if self.key is None:
            return
        api, key = self.claims.api, self.key

        def remove() -> None:
            try:
                for container in api.containers(all=True, filters={"label": [f"{TICKET_LABEL}={key}"]}):
                    _remove(api, container["Id"])
            except (DockerException, requests.RequestException, OSError) as exc:
                log.warning("Could not remove GPU ticket %s (its lease ends it): %s", key, exc)

        if in_thread:
            threading.Thread(target=remove, name=f"dood-gpu-ticket-{key}", daemon=True).start()
        else:
            remove()


def _remove(api: APIClient, container_id: str) -> None:
    with contextlib.suppress(NotFound):
        try:
            api.remove_container(container_id, force=True)
        except APIError as exc:
            if exc.status_code != 409:  # removal already in progress
                raise


def claims_for(api: APIClient, config: DoodConfig, body: Mapping[str, Any], **kwargs: Any) -> GpuClaims | None:
    """Claims for a create body that asks for GPUs (None when it asks for none)."""
    return GpuClaims.of(api, config, **kwargs) if asked(body) is not None else None


def remove_ticket(api: APIClient, key: str) -> None:
    """Give up a place in the queue (a deferred waiter that timed out or was killed)."""
    for container in api.containers(all=True, filters={"label": [f"{TICKET_LABEL}={key}"]}):
        _remove(api, container["Id"])


def task_deadline(context: Mapping[str, Any], execution_timeout: timedelta | None) -> float | None:
    """When a task's execution_timeout ends (epoch seconds), counted from its start; None without one."""
    if not execution_timeout:
        return None
    started = context["ti"].start_date or datetime.now(timezone.utc)
    return (started + execution_timeout).timestamp()


def _count(wanted: Asked) -> str:
    return "all GPUs" if wanted == "all" else f"{wanted} GPU{'s' if wanted != 1 else ''}"


def _by_gpu(holding: list[Holder]) -> list[str]:
    taken = held_by(holding)
    return [f"GPU {gpu}: {taken[gpu].describe()}" for gpu in sorted(taken)]


def _rfc3339(value: object) -> float | None:
    """Seconds since the epoch of Docker's `2026-01-02T03:04:05.123456789Z` (nanoseconds cut to micro)."""
    if not isinstance(value, str) or not value:
        return None
    head, _, rest = value.partition(".")
    fraction = "".join(ch for ch in rest if ch.isdigit())[:6]
    zone = rest[len("".join(ch for ch in rest if ch.isdigit())) :] if rest else head[19:]
    head = head[:19]
    zone = "+00:00" if zone in ("", "Z") else zone
    try:
        parsed = datetime.fromisoformat(f"{head}.{fraction or '0'}{zone}")
    except ValueError:
        return None
    return parsed.astimezone(timezone.utc).timestamp()


__all__ = [
    "LOCK_NAME",
    "TICKET_FOR_LABEL",
    "EngineLock",
    "GpuClaims",
    "GpusBusy",
    "GpusUnavailable",
    "claims_for",
    "remove_ticket",
    "task_deadline",
]
