"""DoodGpuTrigger: wait in the triggerer for a deferred task's turn at the Docker host's GPUs.

The task (`DoodContainerOperator(deferrable=True)` asking for GPUs) found too few free, placed its ticket
in the queue (`dood.gpus.claims`) and deferred, so the wait holds no worker slot. This trigger keeps that
ticket alive (renewing it), sleeps on the engine's container events, looks again (two list calls) only
when the events say it may be the task's turn (`dood.gpus.wakeup.Wakeup`), and fires `ready` once the task's
request fits the free GPUs after every older waiter's; the task then claims them on a worker, and its
ticket, still in place, keeps younger waiters from taking them meanwhile. It fires `timeout` at the
task's deadline (absolute, carried from the operator: a triggerer restart does not restart the clock),
removing the ticket. A cancelled trigger (task killed, triggerer restarting) removes its ticket too; a
resumed one places it again under the same key, so the task keeps its place in the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import aiodocker
import aiohttp
from airflow.triggers.base import BaseTrigger, TriggerEvent

from dood.engine.reconnect import Backoff
from dood.engine.target import DockerTarget
from dood.exceptions import DoodConfigError
from dood.gpus.discovery import known_devices
from dood.gpus.engine_clock import offset_of
from dood.gpus.holdings import GPUS_LABEL, count_phrase, holders
from dood.gpus.queue import KEY_NOT_CURRENT, TICKET_LABEL, Stalls, expired, served, ticket_body, ticket_key, tickets
from dood.gpus.wakeup import Wakeup, still_holding
from dood.hooks.async_docker import async_docker

if TYPE_CHECKING:
    from dood.config.model import DoodConfig
    from dood.gpus.holdings import Asked, Holder
    from dood.gpus.queue import Ticket

CLASSPATH = "dood.triggers.gpus.DoodGpuTrigger"
WATCHED = ("create", "die", "destroy")
UNREACHABLE_SECONDS = 120.0
STALL_SLACK_SECONDS = 5.0  # as `dood.gpus.claims`: beyond a lease, a ticket in turn nobody claims with is passed over
_STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=10)


class DoodGpuTrigger(BaseTrigger):
    """Fires once: ``{"status": "ready", "ticket": key}`` when it is the task's turn, ``timeout`` at the
    deadline, ``error`` when Docker stayed unreachable for two minutes.

    :param ticket: the task's place in the queue (its ticket's key: the daemon's clock when it first asked).
    :param wanted: GPUs asked for: a count, or ``all``.
    :param devices: the inventory (``gpus.devices``, or as discovered through the engine).
    :param image: and ``user``, ``waiter``, ``labels``: what the ticket is created with when renewed.
    :param target: the Docker endpoint (`dood.engine.target.DockerTarget`), or the plain dict it serializes to
        (``target`` in the kwargs). A trigger row of the previous release, with the endpoint as flat kwargs
        (``docker_url``, ``api_version``, ``tls_ca_cert``, ``tls_client_cert``, ``tls_client_key``), still
        constructs: they are mapped onto the target.

    While Docker does not answer, the wait looks again with `dood.engine.reconnect.Backoff` (jittered,
    exponential), warning at each retry, and fires ``error`` once it has failed for ``UNREACHABLE_SECONDS``
    in a row.
    """

    def __init__(
        self,
        *,
        ticket: str,
        wanted: Asked,
        devices: Sequence[str],
        image: str,
        user: str | None,
        waiter: str,
        labels: dict[str, str],
        target: DockerTarget | dict[str, Any] | None = None,
        deadline: float | None = None,
        lease_seconds: float = 120,
        recheck_seconds: float = 10,
        created_hold_seconds: float = 120,
        **previous_release: Any,
    ) -> None:
        super().__init__()
        self.target = DockerTarget.given(target, previous_release, who="DoodGpuTrigger")
        if wanted != "all" and (not isinstance(wanted, int) or wanted < 1):
            raise ValueError(f"wanted: a GPU count >= 1 or 'all', got {wanted!r}")
        self.ticket = ticket
        self.wanted = wanted
        self.devices = tuple(devices)
        self.image = image
        self.user = user
        self.waiter = waiter
        self.labels = dict(labels)
        self.deadline = float(deadline) if deadline is not None else None
        self.lease_seconds = float(lease_seconds)
        self.recheck_seconds = float(recheck_seconds)
        self.created_hold_seconds = float(created_hold_seconds)
        self._offset: float | None = None  # daemon clock minus ours, measured once per run
        self._ended: set[str] = set()  # holders whose die/destroy was seen (`dood.gpus.wakeup.still_holding`)
        self._stalls = Stalls(self.lease_seconds + STALL_SLACK_SECONDS)  # tickets in turn nobody claims with

    @classmethod
    def from_config(
        cls,
        config: DoodConfig,
        *,
        ticket: str,
        wanted: Asked,
        image: str,
        user: str | None,
        waiter: str,
        labels: dict[str, str],
        deadline: float | None,
    ) -> DoodGpuTrigger:
        docker, gpus = config.docker, config.gpus
        devices = gpus.devices or known_devices(docker.url)  # discovered by this process's claim just before
        if not devices:
            raise DoodConfigError("DoodGpuTrigger: no GPU inventory (gpus.devices empty and none discovered)")
        return cls(
            ticket=ticket,
            wanted=wanted,
            devices=devices,
            image=image,
            user=user,
            waiter=waiter,
            labels=labels,
            target=DockerTarget.of(docker),
            deadline=deadline,
            lease_seconds=gpus.ticket_lease_seconds,
            recheck_seconds=gpus.wait_recheck_seconds,
            created_hold_seconds=gpus.created_hold_seconds,
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return CLASSPATH, {
            "ticket": self.ticket,
            "wanted": self.wanted,
            "devices": list(self.devices),
            "image": self.image,
            "user": self.user,
            "waiter": self.waiter,
            "labels": self.labels,
            "target": self.target.as_dict(),
            "deadline": self.deadline,
            "lease_seconds": self.lease_seconds,
            "recheck_seconds": self.recheck_seconds,
            "created_hold_seconds": self.created_hold_seconds,
        }

    async def run(self) -> AsyncIterator[TriggerEvent]:
        yield TriggerEvent(await self.wait())

    async def wait(self) -> dict[str, Any]:
        docker = self._docker()
        leaving = True  # the ticket goes unless the task's turn came (then the task claims with it)
        try:
            payload = await self._wait(docker)
            leaving = payload["status"] != "ready"
            return payload
        finally:
            if leaving:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._remove_tickets(docker))
            await docker.close()

    # -- waiting --------------------------------------------------------------------------------

    async def _wait(self, docker: aiodocker.Docker) -> dict[str, Any]:
        self.log.info(
            "Waiting for %s on %s as ticket %s (first come, first served; Docker events)",
            count_phrase(self.wanted),
            self.target.url,
            self.ticket,
        )
        announced: tuple[int, tuple[str, ...]] | None = None
        backoff = Backoff(UNREACHABLE_SECONDS)
        until = 0.0  # the daemon time our ticket lasts until (0: not placed by this run yet)
        while True:
            if self.deadline is not None and time.time() >= self.deadline:
                return self._payload("timeout", f"No GPUs before the task's deadline (ticket {self.ticket}).")
            try:
                if self._offset is None:
                    self._offset = await self._clock_offset(docker)
                async with self._events(docker) as stream:
                    holding, queue = await self._look(docker)
                    backoff.reset()
                    if served(self.devices, holding, queue, key=self.ticket, wanted=self.wanted) is not None:
                        return self._payload(
                            "ready", f"Ticket {self.ticket}: the task's turn for {count_phrase(self.wanted)}."
                        )
                    until = await self._keep_ticket(docker, queue, until)
                    ahead = sum(1 for t in queue if t.key < self.ticket)
                    shown = (ahead, tuple(sorted(h.describe() for h in holding)))
                    if shown != announced:
                        announced = shown
                        self.log.info(
                            "Waiting for %s on %s; %s waiter(s) before it; held by: %s",
                            count_phrase(self.wanted),
                            self.target.url,
                            ahead,
                            "; ".join(shown[1]) or "nobody",
                        )
                    wakeup = Wakeup(self.devices, self.ticket, self.wanted, ended=self._ended)
                    wakeup.looked(holding, queue)
                    await self._until_maybe_turn(stream, wakeup, until)
                continue  # look again
            except aiodocker.DockerError as exc:
                if exc.status < 500 and exc.status != 900:  # 900: aiodocker's "cannot connect"
                    return self._payload("error", f"Docker refused the GPU wait: {exc}")
                problem: Exception = exc
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                problem = exc
            # Docker did not answer: look again after a backoff, until it has failed UNREACHABLE_SECONDS in a row
            delay = backoff.next_delay()
            if delay is None:
                return self._payload("error", f"Docker at {self.target.url} stayed unreachable while waiting for GPUs.")
            self.log.warning("GPU wait on %s: %s; looking again in %.1fs", self.target.url, problem, delay)
            await asyncio.sleep(delay)

    async def _until_maybe_turn(self, stream: aiohttp.StreamReader, wakeup: Wakeup, until: float) -> None:
        """Read events until one says it may be our turn, the re-check interval, the ticket's renewal time
        or the deadline; returns to look again."""
        ends = time.time() + min(
            self.recheck_seconds, max(0.0, until - self._daemon_now() - self.lease_seconds * 2 / 3)
        )
        if self.deadline is not None:
            ends = min(ends, self.deadline)
        while True:
            left = ends - time.time()
            if left <= 0:
                return
            try:
                line = await asyncio.wait_for(stream.readline(), left)
            except asyncio.TimeoutError:
                return
            if not line:
                return  # the stream ended (the engine going away): look again
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and wakeup.saw(event):
                return

    async def _look(self, docker: aiodocker.Docker) -> tuple[list[Holder], list[Ticket]]:
        listed_holders = await self._list(docker, GPUS_LABEL)
        holding = still_holding(holders(listed_holders, created_hold_seconds=self.created_hold_seconds), self._ended)
        queue = tickets(
            await self._list(docker, TICKET_LABEL),
            daemon_now=self._daemon_now(),
            devices=self.devices,
            lease_seconds=self.lease_seconds,
        )
        return holding, self._stalls.queue(self.devices, holding, queue, own=self.ticket)

    async def _keep_ticket(self, docker: aiodocker.Docker, queue: list[Ticket], until: float) -> float:
        """Place the ticket (again: a resumed trigger) or renew it once a third of its lease has passed;
        returns when it lasts until. Expired tickets of dead waiters are removed on the way."""
        now = self._daemon_now()
        mine = [t for t in queue if t.key == self.ticket]
        lasts = max([until, *(t.until for t in mine)])
        if mine and lasts - now > self.lease_seconds * 2 / 3:
            return lasts
        lasts = now + self.lease_seconds
        try:
            await self._place(docker, lasts)
        except aiodocker.DockerError as exc:
            if exc.status != 403 or KEY_NOT_CURRENT not in str(exc.message):
                raise
            # dood-proxy cannot vouch for the key (the ticket lapsed and the proxy restarted): queue from now
            self.log.warning("GPU ticket %s: %s; queueing again from now", self.ticket, exc.message)
            self.ticket, mine = ticket_key(int(now * 1e9)), []
            await self._place(docker, lasts)
        for ticket in mine:
            await self._remove(docker, ticket.container_id)
        for container_id in expired(await self._list(docker, TICKET_LABEL), daemon_now=now):
            await self._remove(docker, container_id)
        return lasts

    async def _place(self, docker: aiodocker.Docker, until: float) -> None:
        body = ticket_body(
            image=self.image,
            user=self.user,
            key=self.ticket,
            wanted=self.wanted,
            until=until,
            waiter=self.waiter,
            labels=self.labels,
        )
        name = f"dood-gpu-ticket-{self.ticket}-{random.randrange(16**6):06x}"  # noqa: S311 - uniqueness, not secrecy
        await docker._query_json("containers/create", method="POST", params={"name": name}, data=body)

    async def _remove_tickets(self, docker: aiodocker.Docker) -> None:
        for container in await self._list(docker, f"{TICKET_LABEL}={self.ticket}"):
            await self._remove(docker, container["Id"])

    async def _remove(self, docker: aiodocker.Docker, container_id: str) -> None:
        try:
            await docker._query_json(f"containers/{container_id}", method="DELETE", params={"force": "1"})
        except aiodocker.DockerError as exc:
            if exc.status not in (404, 409):
                raise

    async def _list(self, docker: aiodocker.Docker, label: str) -> list[dict[str, Any]]:
        params = {"all": "1", "filters": json.dumps({"label": [label]})}
        return await docker._query_json("containers/json", method="GET", params=params)

    @contextlib.asynccontextmanager
    async def _events(self, docker: aiodocker.Docker) -> AsyncIterator[aiohttp.StreamReader]:
        """Every container's create/die/destroy events from now on (opened before looking: none missed)."""
        params = {"filters": json.dumps({"type": ["container"], "event": list(WATCHED)})}
        async with docker._query("events", params=params, timeout=_STREAM_TIMEOUT) as response:
            try:
                yield response.content
            finally:
                response.close()

    async def _clock_offset(self, docker: aiodocker.Docker) -> float:
        before = time.time()
        info = await docker._query_json("info")
        return offset_of(info.get("SystemTime"), before, time.time())

    def _daemon_now(self) -> float:
        return time.time() + (self._offset or 0.0)

    def _docker(self) -> aiodocker.Docker:
        return async_docker(self.target)

    def _payload(self, status: str, message: str) -> dict[str, Any]:
        when = datetime.fromtimestamp(self.deadline, tz=timezone.utc).isoformat() if self.deadline else None
        return {"status": status, "ticket": self.ticket, "message": message, "deadline": when}
