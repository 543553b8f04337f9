"""A GPU waiter's ticket in the engine: placed when it must wait, renewed while it waits, removed when it leaves.

The queue's rules (whose turn it is, what a ticket's labels mean) are `dood.gpus.queue`; this module is the
engine side of one waiter's place. A ticket nobody renews for `gpus.ticket_lease_seconds` no longer counts
(its waiter died) and is removed by the next waiter that renews its own.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import requests
from docker.errors import APIError, DockerException, NotFound

from dood.gpus.queue import KEY_NOT_CURRENT, TICKET_LABEL, expired, ticket_body, ticket_key
from dood.naming import MANAGED_LABEL

if TYPE_CHECKING:
    from collections.abc import Callable

    from docker import APIClient

    from dood.gpus.holdings import Asked
    from dood.gpus.queue import Ticket

log = logging.getLogger(__name__)


class QueuePlace:
    """This waiter's ticket: placed when it must wait, renewed while it waits, removed when it leaves.

    Given what it needs directly (the claimer, `dood.gpus.claims.GpuClaims`, makes one): the engine's API, the
    tickets' image and user, the lease, the daemon's clock and the engine's ticket list."""

    def __init__(
        self,
        api: APIClient,
        *,
        image: str,
        user: str | None,
        lease_seconds: float,
        daemon_ns: Callable[[], int],
        tickets_listed: Callable[[], list[dict[str, Any]]],
        wanted: Asked,
        waiter: str,
        labels: Mapping[str, str],
        key: str | None = None,
    ) -> None:
        self.api = api
        self.image = image
        self.user = user
        self.lease_seconds = lease_seconds
        self.daemon_ns = daemon_ns
        self.tickets_listed = tickets_listed
        self.wanted = wanted
        self.waiter = waiter
        self.labels = {k: v for k, v in labels.items() if k in (MANAGED_LABEL, "dood.stack")}
        self.key: str | None = key
        self.until = 0.0
        self.ids: set[str] = set()

    def place(self, queue: list[Ticket]) -> str:
        """Take a place (an earlier try's of this same task instance, if it left one), or renew ours once a
        third of its lease has passed; returns the ticket's key."""
        lease = self.lease_seconds
        mine = [t for t in queue if t.key == self.key] if self.key else []
        if self.key is None and self.waiter:
            earlier = [t for t in queue if t.waiter == self.waiter]
            if earlier:
                self.key, mine = earlier[0].key, earlier[:1]
        if self.key is None:
            self.key = ticket_key(self.daemon_ns())
        now = self.daemon_ns() / 1e9
        if mine and (self.until or mine[0].until) - now > lease * 2 / 3:
            self.until = self.until or mine[0].until
            self.ids.add(mine[0].container_id)
            return self.key
        api = self.api
        self.until = now + lease
        try:
            created = self._create(api)
        except APIError as exc:
            if exc.status_code != 403 or KEY_NOT_CURRENT not in str(exc.explanation or ""):
                raise
            # dood-proxy cannot vouch for this key (our ticket expired, and the proxy restarted since): the
            # place is lost; queue again from now
            log.warning("GPU ticket %s: %s; queueing again from now", self.key, exc.explanation)
            self.key, mine = ticket_key(self.daemon_ns()), []
            created = self._create(api)
        older = [t.container_id for t in mine] + sorted(self.ids)
        self.ids = {created}
        for container_id in older:  # the renewed one(s): the new ticket is in place first
            _remove(api, container_id)
        for container_id in expired(self.tickets_listed(), daemon_now=now):
            _remove(api, container_id)  # tickets of waiters that died
        return self.key

    def _create(self, api: APIClient) -> str:
        assert self.key is not None  # noqa: S101 - narrowing: a ticket is made only after its key
        body = ticket_body(
            image=self.image,
            user=self.user,
            key=self.key,
            wanted=self.wanted,
            until=self.until,
            waiter=self.waiter,
            labels=self.labels,
        )
        name = f"dood-gpu-ticket-{self.key}-{random.randrange(16**6):06x}"  # noqa: S311 - uniqueness, not secrecy
        return api.create_container_from_config(body, name=name)["Id"]

    def leave(self, *, in_thread: bool = True) -> None:
        """Remove this waiter's ticket(s), in a thread by default: a served waiter need not wait for it (its
        holder's `dood.gpu_served` label already tells everyone it was served)."""
        if self.key is None:
            return
        api, key = self.api, self.key

        def remove() -> None:
            try:
                remove_ticket(api, key)
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


def remove_ticket(api: APIClient, key: str) -> None:
    """Give up a place in the queue (a deferred waiter that timed out or was killed)."""
    for container in api.containers(all=True, filters={"label": [f"{TICKET_LABEL}={key}"]}):
        _remove(api, container["Id"])
