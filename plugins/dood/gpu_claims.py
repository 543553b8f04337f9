"""Claiming GPUs on the Docker host: atomic across processes, with the engine as the only record.

A claim is a container created with explicit `DeviceIDs` and the label `dood.gpus=<ids>`; it ends when
that container ends, by any path (exit, kill, OOM, `rm -f`, janitor, engine restart), because holdings
are read from the engine's container list every time (`dood.gpus.holders`). What must be atomic is
"look at the holdings, then create": two processes looking at once would pick the same free GPU. That
window is closed by a lock the engine itself provides: a container *name* is reserved atomically by the
daemon, so of all processes creating `dood-gpu-lock` exactly one succeeds (the others get 409) until it is
removed again. The lock is held for one list-and-create (tens of milliseconds); a lock left by a holder
that died is broken after `gpus.lock_stale_seconds`, and a holder whose lock was broken meanwhile takes its
create back (see `create`), so even a broken lock never yields two holders of one GPU.

A task that finds too few free GPUs waits for the engine's `die`/`destroy` events of GPU holders (no
polling; a bounded re-check every `gpus.wait_recheck_seconds`), saying which containers hold them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from docker.errors import APIError, NotFound

from dood.exceptions import DoodConfigError, DoodError
from dood.gpus import GPUS_LABEL, asked, choose, claimed_body, held_by, holders, never_fits, refused_as_held
from dood.naming import MANAGED_LABEL

if TYPE_CHECKING:
    from docker import APIClient

    from dood.config import DoodConfig
    from dood.gpus import Asked, GpuInventory, Holder

log = logging.getLogger(__name__)
LOCK_NAME = "dood-gpu-lock"
LOCK_LABEL = "dood.gpu_lock"  # value: who holds it, host:pid


class GpusUnavailable(DoodError):
    """The GPUs did not free up before the task's deadline (its execution_timeout)."""


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
        looked_stale = time.monotonic()
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
            if give_up is not None and give_up():
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
        with contextlib.suppress(NotFound):
            self.api.remove_container(lock_id, force=True)

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
    """Creates GPU containers with GPUs nobody else holds, waiting for them when none are free."""

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
    ) -> None:
        self.api = api
        self.inventory = inventory
        self.host = host
        self.lock = EngineLock(api, image=image, user=user, stale_seconds=inventory.lock_stale_seconds)
        self.emit = emit or log.info
        self.deadline = deadline
        self.claimed: tuple[str, ...] = ()
        self._clock_offset: float | None = None

    @classmethod
    def of(cls, api: APIClient, config: DoodConfig, **kwargs: Any) -> GpuClaims:
        return cls(api, config.gpus, host=config.docker.url, **kwargs)

    def create(self, body: Mapping[str, Any], create: Callable[[dict[str, Any]], str]) -> str:
        """`create(body)` itself when the body asks for no GPU by count; otherwise, under the lock, with its
        count turned into free `DeviceIDs` (and the `dood.gpus` label), waiting while too few are free."""
        wanted = asked(body)
        if wanted is None:
            return create(dict(body))
        why = never_fits(self.inventory.devices, wanted)
        if why:
            raise DoodConfigError(f"resources.gpus: {why}")
        announced: tuple[str, ...] | None = None
        unseen: set[str] = set()  # GPUs dood-proxy said are held by containers not listed to us
        while True:
            with self._releases() as released:  # subscribed before looking: no release is missed
                holding = self.holding()
                if self._pick(holding, unseen, wanted) is not None:
                    container_id = self._claim(body, create, wanted, unseen)
                    if container_id is not None:
                        return container_id
                    continue  # taken first by another: look again (then wait)
                described = tuple(sorted({h.describe() for h in holding}))
                if described != announced:
                    announced = described
                    self.emit(
                        f"Waiting for {_count(wanted)} on host {self.host} ({len(self.inventory.devices)} in all); "
                        f"held by: {'; '.join(_by_gpu(holding)) or 'nobody (re-checking)'}"
                    )
                self._check_deadline()
                next(released, None)  # the first die/destroy of a GPU holder, or the re-check interval
            unseen.clear()

    def _pick(self, holding: list[Holder], unseen: set[str], wanted: Asked) -> tuple[str, ...] | None:
        return choose(self.inventory.devices, {*held_by(holding), *unseen}, wanted)

    def _claim(
        self, body: Mapping[str, Any], create: Callable[[dict[str, Any]], str], wanted: Asked, unseen: set[str]
    ) -> str | None:
        """Under the lock: pick free GPUs again and create with them; None when they were taken first.
        Waiting for the lock stops as soon as an unlocked look shows them taken (no herd behind the lock)."""

        def taken_meanwhile() -> bool:
            return self._pick(self.holding(), unseen, wanted) is None

        while True:
            with self.lock.held(self.deadline, give_up=taken_meanwhile) as lock_id:
                ids = self._pick(self.holding(), unseen, wanted) if lock_id else None
                if ids is None:
                    return None
                try:
                    container_id = create(claimed_body(body, ids))
                except APIError as exc:
                    held = refused_as_held(str(exc.explanation or ""))
                    if exc.status_code != 403 or held is None:
                        raise
                    unseen.update(held or ids)
                    return None
                if self.lock.holds(lock_id):
                    self.claimed = ids
                    self.emit(f"Claimed GPU(s) {','.join(ids)} on host {self.host} (label {GPUS_LABEL})")
                    return container_id
                # Our lock was broken as stale while we created: someone may have picked the same GPUs.
                self.api.remove_container(container_id, force=True)

    def holding(self) -> list[Holder]:
        listed = self.api.containers(all=True, filters={"label": [GPUS_LABEL]})
        return holders(listed, created_hold_seconds=self.inventory.created_hold_seconds)

    @contextlib.contextmanager
    def _releases(self) -> Iterator[Iterator[Any]]:
        """The engine's die/destroy events of GPU holders from now on, until the re-check interval (or the
        deadline) ends; opened before the holdings are read, so a release in between is still seen."""
        until = time.time() + self.inventory.wait_recheck_seconds
        if self.deadline is not None:
            until = max(min(until, self.deadline), time.time() + 0.05)
        stream = self.api.events(
            until=f"{until + self._daemon_clock_offset():.9f}",  # the daemon's clock
            filters={"type": ["container"], "event": ["die", "destroy"], "label": [GPUS_LABEL]},
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

    def _daemon_clock_offset(self) -> float:
        """Daemon clock minus ours (the event window is in the daemon's time; hosts may differ)."""
        if self._clock_offset is None:
            before = time.time()
            daemon = _rfc3339(self.api.info().get("SystemTime"))
            after = time.time()
            self._clock_offset = 0.0 if daemon is None else daemon - (before + after) / 2
        return self._clock_offset


def claims_for(api: APIClient, config: DoodConfig, body: Mapping[str, Any], **kwargs: Any) -> GpuClaims | None:
    """Claims for a create body that asks for GPUs (None when it asks for none)."""
    return GpuClaims.of(api, config, **kwargs) if asked(body) is not None else None


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
