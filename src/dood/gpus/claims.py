"""Claiming GPUs on the Docker host: atomic across processes, first come first served, the engine the only record.

A claim is a container created with explicit `DeviceIDs` and the label `dood.gpus=<ids>`; it ends when
that container ends, by any path (exit, kill, OOM, `rm -f`, janitor, engine restart), because holdings
are read from the engine's container list every time (`dood.gpus.holdings.holders`). What must be atomic is
"look at the holdings, then create": two processes looking at once would pick the same free GPU. That
window is closed by a lock the engine itself provides: a container *name* is reserved atomically by the
daemon, so of all processes creating `dood-gpu-lock` exactly one succeeds (the others get 409) until it is
removed again. The lock is held for one list-and-create (tens of milliseconds); a lock left by a holder
that died is broken after `gpus.lock_stale_seconds`, and a holder whose lock was broken meanwhile takes its
create back (see `_claim`), so even a broken lock never yields two holders of one GPU (`dood.gpu_lock`).

Waiters queue: a task that finds too few free GPUs (or older waiters) places a *ticket* in the engine, a
created, never started container labelled with the daemon's clock when it first asked (`dood.gpus.queue`;
placed and renewed by `dood.gpu_ticket`). Freed GPUs go to the oldest tickets first
(`dood.gpus.queue.served`); only a waiter whose turn it is takes the lock. Waiters sleep on the engine's
container events and look again (two list calls) only when the events say it may be their turn
(`dood.gpus.wakeup.Wakeup`), with a bounded re-check every `gpus.wait_recheck_seconds`. A ticket is renewed
while its waiter lives; one nobody renews for `gpus.ticket_lease_seconds` no longer counts (its waiter
died). With `wait=False` (deferrable tasks) the waiter leaves its ticket in place and raises `GpusBusy`:
the triggerer waits (`dood.triggers.gpus`).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import requests
from docker.errors import APIError, DockerException

from dood.exceptions import DoodConfigError, DoodError, GpusBusy, GpusUnavailable
from dood.gpus.discovery import inventory_of
from dood.gpus.engine_clock import clock_offset, daemon_ns
from dood.gpus.holdings import (
    GPUS_LABEL,
    Holder,
    asked,
    claimed_body,
    count_phrase,
    held_by,
    holders,
    never_fits,
    refused_as_held,
    waiter_of,
)
from dood.gpus.lock import LOCK_NAME, EngineLock
from dood.gpus.queue import TICKET_FOR_LABEL, TICKET_LABEL, Stalls, ahead_of, served, ticket_key, tickets
from dood.gpus.ticket import QueuePlace, remove_ticket
from dood.gpus.wakeup import Wakeup, still_holding

if TYPE_CHECKING:
    from docker import APIClient

    from dood.config.gpu_inventory import GpuInventory
    from dood.config.model import DoodConfig
    from dood.gpus.holdings import Asked
    from dood.gpus.queue import Ticket

log = logging.getLogger(__name__)
WATCHED = ("create", "die", "destroy")
UNREACHABLE_SECONDS = 120  # how long the engine may stay out of reach (a restart) before a claim gives up
STALL_SLACK_SECONDS = 5  # beyond a lease, before a ticket in turn that nobody claims with is passed over


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
        self._ended: set[str] = set()  # holders whose die/destroy this waiter saw (`dood.gpus.wakeup.still_holding`)
        # tickets in turn that nobody claims with are passed over after a lease (`dood.gpus.queue.Stalls`)
        self._stalls = Stalls(inventory.ticket_lease_seconds + STALL_SLACK_SECONDS)

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
        # the config's, or discovered (the probe runs as the step's identity: the one the policy allows)
        self.inventory, _ = inventory_of(self.api, self.host, self.inventory, self.user)
        why = never_fits(self.inventory.devices, wanted)
        if why:
            raise DoodConfigError(f"resources.gpus: {why}")
        labels = dict(body.get("Labels") or {})
        waiter = waiter_of(labels)
        queued = QueuePlace(
            self.api,
            image=self.image,
            user=self.user,
            lease_seconds=self.inventory.ticket_lease_seconds,
            daemon_ns=self.daemon_ns,
            tickets_listed=self.tickets_listed,
            wanted=wanted,
            waiter=waiter,
            labels=labels,
            key=self.ticket,
        )
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
        self, body: Mapping[str, Any], create: Callable[[dict[str, Any]], str], wanted: Asked, queued: QueuePlace
    ) -> str:
        announced: tuple[str, ...] | None = None
        unseen: set[str] = set()  # GPUs dood-proxy said are held by containers not listed to us
        failures, failing_since = 0, None
        while True:
            try:
                with self._events() as events:  # subscribed before looking: no release is missed
                    while True:  # look, claim or wait for an event that may make it our turn; again
                        holding, queue = self._look(unseen, own=queued.key)
                        key = queued.key or ticket_key(self.daemon_ns())  # a newcomer comes after everyone
                        if served(self.inventory.devices, holding, queue, key=key, wanted=wanted) is not None:
                            container_id = self._claim(body, create, wanted, key if queued.key else None, unseen)
                            if container_id is not None:
                                return container_id
                            continue  # taken first by another: look again (then wait)
                        key = queued.place(queue)
                        described = tuple(sorted({h.describe() for h in holding}))
                        if described != announced:
                            announced = described
                            self.emit(self._waiting_line(wanted, holding, ahead_of(queue, key)))
                        if not self.wait:
                            raise GpusBusy(
                                f"{count_phrase(wanted)} not free on host {self.host}: waiting deferred, ticket {key}",
                                ticket=key,
                                wanted=wanted,
                            )
                        self._check_deadline()
                        wakeup = Wakeup(self.inventory.devices, key, wanted, ended=self._ended)
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
                delay = min(0.1 * 2**failures, 1.0) * (0.5 + random.random() / 2)  # noqa: S311 - jitter
                log.warning("Claiming GPUs on %s: %s; again in %.1fs", self.host, exc, delay)
                time.sleep(delay)

    def _waiting_line(self, wanted: Asked, holding: list[Holder], ahead: int) -> str:
        queue = f"; {ahead} waiter{'s' if ahead != 1 else ''} before it" if ahead else ""
        return (
            f"Waiting for {count_phrase(wanted)} on host {self.host} ({len(self.inventory.devices)} in all{queue}); "
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
            holding, queue = self._look(unseen, own=ticket)
            key = ticket or ticket_key(self.daemon_ns())
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
                unseen.update(held or ids or ())
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
        return tickets(
            self.tickets_listed(),
            daemon_now=self.daemon_ns() / 1e9,
            devices=self.inventory.devices,
            lease_seconds=self.inventory.ticket_lease_seconds,
        )

    def tickets_listed(self) -> list[dict[str, Any]]:
        return self.api.containers(all=True, filters={"label": [TICKET_LABEL]})

    def _look(self, unseen: set[str], own: str | None = None) -> tuple[list[Holder], list[Ticket]]:
        holding = still_holding(self.holding(), self._ended)
        if unseen:
            holding.append(Holder("", "(another stack's, hidden by dood-proxy)", "running", tuple(unseen), {}))
        return holding, self._stalls.queue(self.inventory.devices, holding, self.queue(), own=own)

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
        )  # type: ignore[call-overload] # the stubs miss events(until=str)
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
        return clock_offset(self.api, self.host)

    def daemon_ns(self) -> int:
        return daemon_ns(self.api, self.host)


def claims_for(api: APIClient, config: DoodConfig, body: Mapping[str, Any], **kwargs: Any) -> GpuClaims | None:
    """Claims for a create body that asks for GPUs (None when it asks for none)."""
    return GpuClaims.of(api, config, **kwargs) if asked(body) is not None else None


def _by_gpu(holding: list[Holder]) -> list[str]:
    taken = held_by(holding)
    return [f"GPU {gpu}: {taken[gpu].describe()}" for gpu in sorted(taken)]


__all__ = [
    "LOCK_NAME",
    "TICKET_FOR_LABEL",
    "EngineLock",
    "GpuClaims",
    "GpusBusy",
    "GpusUnavailable",
    "claims_for",
    "remove_ticket",
]
