"""A mutex shared by every process using one Docker engine: a container name, which the daemon reserves atomically.

Of all processes creating the container `dood-gpu-lock`, exactly one succeeds (the others get 409) until it
is removed again. It guards "look at the GPU holdings, then create" (`dood.gpus.claims`). A lock left by a
holder that died is broken after `gpus.lock_stale_seconds`, by id, as seen on our own clock.

Through dood-proxy the lock is the proxy's alone: it takes it itself around every create that names GPUs
(`dood.proxy.gpus`), and refuses a client's create of `dood-gpu-lock` with `PROXY_TAKES_LOCK` in its
message. `EngineLock` then holds nothing (its id is `REFEREED`): the proxy serialises the claim on the engine,
and refuses (403, `dood.gpus.holdings.COLLISION`) a create whose GPUs were taken since the claimer looked.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from docker.errors import APIError, NotFound

from dood.exceptions import GpusUnavailable
from dood.gpus.holdings import LOCK_LABEL, LOCK_NAME, PROXY_TAKES_LOCK
from dood.naming import MANAGED_LABEL

if TYPE_CHECKING:
    from docker import APIClient

log = logging.getLogger(__name__)
GIVE_UP_EVERY_SECONDS = 0.1  # how often a task waiting for the claim lock looks whether it is still its turn
#: The lock id `EngineLock.acquire` returns behind dood-proxy: nothing to hold or remove.
REFEREED = "dood-proxy"


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
        self.refereed = False  # behind dood-proxy, which takes the lock itself around each GPU create
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
            if self.refereed:
                return REFEREED
            try:
                return self.api.create_container_from_config(self._body, name=self.name)["Id"]
            except APIError as exc:
                if exc.status_code == 403 and PROXY_TAKES_LOCK in str(exc.explanation or ""):
                    self.refereed = True
                    continue
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
            time.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter
            delay = min(delay * 2, 0.1)

    def holds(self, lock_id: str) -> bool:
        """Whether `lock_id` is still the lock (nobody broke it as stale meanwhile)."""
        if lock_id == REFEREED:
            return True
        try:
            return self.api.inspect_container(self.name)["Id"] == lock_id
        except NotFound:
            return False

    def release(self, lock_id: str) -> None:
        self.released(lock_id)

    def released(self, lock_id: str) -> bool:
        """Remove the lock `lock_id`; False when it was gone already (broken as stale by another)."""
        if lock_id == REFEREED:
            return True
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
