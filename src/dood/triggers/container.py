"""DoodContainerTrigger: wait in the triggerer for one container to end, from Docker's event stream.

Events, not polling: hundreds of deferred tasks would otherwise each hit the daemon every few seconds,
while a subscription costs one idle connection and reports the exit within milliseconds.

No exit may be missed, so the order is: subscribe, then inspect once (the container may already have
ended, or be gone), then read the stream. The waits of a process share one stream and session per endpoint
(`dood.triggers.event_hub`); a wait's feed starts with its container's recent events, as Docker's replay
(`since=`) would give a stream of its own: that covers any gap between Docker answering the subscription
and registering it, and exits that happened while a broken stream was being re-opened. Every (re)connect
inspects again, so an exit that Docker's replay buffer has already forgotten is still seen.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

import aiodocker
import aiohttp
from airflow.triggers.base import BaseTrigger, TriggerEvent

from dood.engine.reconnect import KILL_EXIT_CODES, Backoff, Outages, shutdown_note, unreachable_message
from dood.engine.target import DockerTarget
from dood.hooks.async_docker import async_docker, tls_files
from dood.lifecycle.docker_time import epoch_ns
from dood.lifecycle.outcome import ENDED, ENDING_KEY, RESUME_KEY, Outcome, gone_event, wait_event
from dood.lifecycle.teardown import detach
from dood.triggers.event_hub import EventHub, Feed, shared_hub
from dood.triggers.events import event_action

if TYPE_CHECKING:
    from dood.config.model import DoodConfig

CLASSPATH = "dood.triggers.container.DoodContainerTrigger"
DEFAULT_DOCKER_URL = "unix:///var/run/docker.sock"
SIGKILL_EXIT_CODE = 137  # killed: by the kernel (OOM), `docker kill`, `docker rm -f`, or the daemon's shutdown
REPLAY_GRACE_SECONDS = 1.0  # how long replayed events are read once the container is found gone
# How long after its task deferred an outcome is held back (`settle_seconds`): Airflow 3.3 fails a try resumed
# before the executor's report that its deferring worker exited was processed (see DoodContainerTrigger).
RESUME_SETTLE_SECONDS = 15.0

_API_VERSION = re.compile(r"^(auto|v?\d+\.\d+)$")


@dataclass
class _Watch:
    """What one wait has learned about the container so far; kept across reconnects."""

    started_ns: int = 0  # StartedAt of the run being watched: older events are replays of an earlier run
    auto_remove: bool = False  # Docker removes it on exit by itself, so "gone right after die" is normal
    oom_seen: bool = False
    outages: Outages = field(default_factory=Outages)  # when the daemon did not answer (dood.engine.reconnect)

    def learn(self, info: dict[str, Any]) -> None:
        self.started_ns = epoch_ns(info["State"].get("StartedAt"))
        self.auto_remove = bool((info.get("HostConfig") or {}).get("AutoRemove"))


class DoodContainerTrigger(BaseTrigger):
    """Fires once, when a container has ended, vanished, or outlived its deadline.

    The event's payload: ``status`` (success | failed | timeout | error), ``container_id``, ``exit_code``,
    ``oom_killed``, ``error_message``, ``finished_at`` (Docker's time of the exit, epoch seconds) and a
    human ``message``. ``error`` means the container disappeared before its outcome could be read (then
    ``gone`` is true, with ``exit_code`` when Docker's events still held it), or Docker stayed unreachable
    past ``retry_budget_seconds`` ("Docker daemon unreachable since …"). A container the daemon's shutdown
    killed (a restart without live-restore, `dood.engine.reconnect`) is ``failed`` with ``killed_by_daemon`` saying so.

    :param container_id: the container to wait for (id, or name).
    :param target: the Docker endpoint (`dood.engine.target.DockerTarget`: URL, API version, TLS files), or the
        plain dict it serializes to (``target`` in the kwargs); the local socket when omitted. Its API version:
        ``auto`` or a version such as ``1.41`` (a fixed one saves a round trip per wait). A trigger row of the
        previous release, with the endpoint as flat kwargs (``docker_url``, ``api_version``, ``tls_ca_cert``,
        ``tls_client_cert``, ``tls_client_key``), still constructs: they are mapped onto the target.
    :param deadline: epoch seconds after which the wait ends with ``timeout``. Absolute, so a triggerer
        restart does not restart the clock.
    :param timeout_seconds: shorthand for ``deadline = now + timeout_seconds``; only the deadline is kept.
    :param retry_budget_seconds: how long Docker may stay unreachable before the wait gives up (the config's
        ``docker.unreachable_timeout_seconds``).
    :param stop_grace_seconds: when a user kills the deferred task (mark failed, clear...), or the deadline
        passes, stop the container with this grace, then remove it, as the operator's ``on_kill`` does; None
        leaves it alone (a waiter that does not own the container). At the deadline the ``timeout`` event then
        says so in ``ending``: the resume, which Airflow may terminate (a late executor event of the deferring
        worker fails the try), does not have to be the one that ends it.
    :param host: the Docker host (the config's ``hosts:``) the container runs on. The triggerer then reaches
        it the way its own dood config says (`dood.hosts.endpoint_from_here`), and uses the endpoint above
        only when its config does not know the host.
    :param resume: what the task's resume needs when its dood config cannot be read
        (`dood.lifecycle.completion.resume_carry`): echoed in every event under ``resume``, with the endpoint handed
        over above (``docker``), so a config made invalid during the wait fails no finished training.
    :param settle_seconds: hold an outcome (not a ``timeout``) back until this long after now, the moment the
        task defers; only the absolute time (``resume_not_before``) is kept, as for the deadline.
        `from_config` gives ``RESUME_SETTLE_SECONDS``. Why: Airflow 3.3's scheduler fails a deferred try
        resumed before it processed the executor's report that the worker which deferred it exited ("success",
        up to ~5 s after the deferral: the Task SDK supervisor notices its task process gone only every
        5 s; later on a loaded machine): that report then finds the resumed try queued or running, takes it for
        a try killed outside Airflow ("Executor ... reported that the task instance ... finished with state
        success, but the task instance's state attribute is queued") and marks it FAILED, so the resumed run
        cannot start ("TI was not in a state where it could be marked as running, previous_state: failed").
        A container ending within seconds of its deferral met that; held, its resume comes after the report.
    """

    def __init__(
        self,
        *,
        container_id: str,
        target: DockerTarget | dict[str, Any] | None = None,
        deadline: float | None = None,
        timeout_seconds: float | None = None,
        retry_budget_seconds: float = 120.0,
        stop_grace_seconds: int | None = None,
        host: str | None = None,
        resume: dict[str, Any] | None = None,
        resume_not_before: float | None = None,
        settle_seconds: float | None = None,
        **previous_release: Any,
    ) -> None:
        super().__init__()
        self.target = DockerTarget.given(
            target, previous_release, who="DoodContainerTrigger", default_url=DEFAULT_DOCKER_URL
        )
        _validate(
            container_id, self.target.api_version, deadline, timeout_seconds, retry_budget_seconds, stop_grace_seconds
        )
        _validate_settle(resume_not_before, settle_seconds)
        self.container_id = container_id
        self.deadline = float(deadline) if deadline is not None else None
        if timeout_seconds is not None:
            self.deadline = time.time() + timeout_seconds
        self.retry_budget_seconds = float(retry_budget_seconds)
        self.stop_grace_seconds = stop_grace_seconds
        self.host = host
        self.resume = resume
        self.resume_not_before = float(resume_not_before) if resume_not_before is not None else None
        if settle_seconds is not None:
            self.resume_not_before = time.time() + settle_seconds
        self._handed_over = self.target  # before `_reach_host`: the endpoint the task's worker reaches
        self._ending: str | None = None  # set once this trigger began to end the container at its deadline

    @classmethod
    def from_config(
        cls,
        config: DoodConfig,
        container_id: str,
        *,
        timeout_seconds: float | None = None,
        deadline: float | None = None,
        stop_grace_seconds: int | None | Literal["config"] = "config",
        resume: dict[str, Any] | None = None,
        settle_seconds: float | None = RESUME_SETTLE_SECONDS,
    ) -> DoodContainerTrigger:
        """The trigger for a container launched through this config's Docker endpoint, made as the task defers.
        On a user kill it stops the container with the config's grace period, unless `stop_grace_seconds` says
        otherwise (None: leave it running, for a waiter that does not own the container). An outcome is held
        back until `settle_seconds` after now (see the class)."""
        docker = config.reachable_docker  # with several hosts: the one a triggerer on any host reaches
        return cls(
            container_id=container_id,
            target=DockerTarget.of(docker),
            timeout_seconds=timeout_seconds,
            deadline=deadline,
            retry_budget_seconds=docker.unreachable_timeout_seconds,
            stop_grace_seconds=(
                config.defaults.stop_grace_period_seconds if stop_grace_seconds == "config" else stop_grace_seconds
            ),
            host=config.host,
            resume=resume,
            settle_seconds=settle_seconds,
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return CLASSPATH, {
            "container_id": self.container_id,
            "target": self.target.as_dict(),
            "deadline": self.deadline,
            "retry_budget_seconds": self.retry_budget_seconds,
            "stop_grace_seconds": self.stop_grace_seconds,
            "host": self.host,
            "resume": self.resume,
            "resume_not_before": self.resume_not_before,
        }

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Yield exactly one event; the Docker session is already closed when it is yielded."""
        event = await self.wait()
        await self._settle(event)
        yield TriggerEvent(self._for_resume(event))

    async def _settle(self, event: dict[str, Any]) -> None:
        """Hold an outcome back until `resume_not_before` (see `settle_seconds`). A ``timeout`` is not held:
        the deadline is the user's, and Airflow's own deadline check would answer first."""
        if self.resume_not_before is None or event.get("status") == "timeout":
            return
        hold = self.resume_not_before - time.time()
        if hold <= 0:
            return
        self.log.info(
            "Container %s ended (%s) soon after its task deferred: resuming the task in %.1fs, once Airflow has "
            "seen the worker that deferred it exit (Airflow 3.3 fails a try resumed before that)",
            self.container_id[:12],
            event.get("status"),
            hold,
        )
        await asyncio.sleep(hold)

    async def wait(self) -> dict[str, Any]:
        """The payload of the one event. The session is closed whatever happens, cancellation included."""
        remaining = None if self.deadline is None else self.deadline - time.time()
        if remaining is not None and remaining <= 0:
            return await self._at_deadline()
        try:
            return await self._wait_until(remaining)
        except asyncio.CancelledError:
            # Airflow's own deadline check (the scheduler's, same deadline) cancels a wait it times out without
            # calling on_kill: end the container here, or nobody does (the resume never reaches the operator).
            if self.deadline is not None and time.time() >= self.deadline and self._ending is None:
                await self._end_at_deadline()
            raise

    async def _wait_until(self, remaining: float | None) -> dict[str, Any]:
        await self._reach_host()
        target = self.target
        self.log.info("Waiting for container %s to end (Docker events at %s)", self.container_id[:12], target.url)
        tls = (target.tls_ca_cert, target.tls_client_cert, target.tls_client_key)
        async with shared_hub(target, self._docker, lambda: tls_files(*tls)) as hub:
            try:
                return await asyncio.wait_for(self._watch(hub), timeout=remaining)
            except asyncio.TimeoutError:
                pass
        return await self._at_deadline()

    async def _at_deadline(self) -> dict[str, Any]:
        """The ``timeout`` event, once the container's end is under way when this trigger owns it: whoever
        ends the try last (a resume Airflow may terminate, or nobody) must not leave it running."""
        event = self._timed_out()
        await self._end_at_deadline()
        if self._ending is not None:
            event[ENDING_KEY] = self._ending
        return event

    async def _end_at_deadline(self) -> None:
        """Stop (grace period), then remove, in a process that outlives this trigger (`dood.lifecycle.teardown`); not
        waited for, so the event fires at once. A failure to start it is logged: the resume then ends it."""
        if self.stop_grace_seconds is None:
            return
        try:
            await self._reach_host()
            ending = detach(
                self.target,
                self.container_id,
                self.stop_grace_seconds,
                runs_root=self._runs_root_carried() or _runs_root(),
                who="its deadline (execution_timeout), in the triggerer",
            )
        except Exception as exc:  # noqa: BLE001 - the resume's own stop is the fallback
            self.log.warning("Could not start ending container %s at its deadline: %s", self.container_id[:12], exc)
            return
        self._ending = (
            f"The triggerer is stopping container {self.container_id[:12]} (grace {self.stop_grace_seconds}s), "
            f"then removing it, in pid {ending.pid}"
        )
        self.log.info("Deadline passed: %s, which outlives this trigger", self._ending)

    def _runs_root_carried(self) -> str | None:
        """The runs root the task's handle names (its run directory's parent), without reading the config."""
        run_dir = ((self.resume or {}).get("handle") or {}).get("run_dir")
        return run_dir.rsplit("/", 1)[0] if run_dir else None

    def _for_resume(self, event: dict[str, Any]) -> dict[str, Any]:
        """The event with what the resume needs when its config cannot be read (`resume`), when given."""
        if self.resume is None:
            return event
        docker = {**self._handed_over.as_dict(), "unreachable_timeout_seconds": self.retry_budget_seconds}
        return {**event, RESUME_KEY: {**self.resume, "docker": docker}}

    async def on_kill(self) -> None:
        """A user killed the deferred task: no worker runs the operator's on_kill, so end the container here.

        The stop-then-remove runs in a process of its own (`dood.lifecycle.teardown`), as the operator's does: the
        triggerer cancels this coroutine again on its next sync (and a triggerer restart ends it), which
        would cut a stop in its grace period short and never reach the removal. Waiting for that process
        only reports its result; a second cancel ends the waiting, not the teardown.
        """
        if self.stop_grace_seconds is None:
            return
        await self._reach_host()
        ending = detach(
            self.target,
            self.container_id,
            self.stop_grace_seconds,
            runs_root=_runs_root(),
            who="a kill of its deferred task",
        )
        self.log.info(
            "Stopping container %s (grace %ss), then removing it, in pid %s, which outlives this trigger",
            self.container_id[:12],
            self.stop_grace_seconds,
            ending.pid,
        )
        self.log.info("%s", await ending.wait_async())

    async def _reach_host(self) -> None:
        """Take this triggerer's way to the container's host, when its config knows the host; else keep the
        endpoint the task handed over (a config that cannot be read is logged, and changes nothing)."""
        if self.host is None:
            return
        from dood.hosts import endpoint_from_here  # placement's imports only where hosts are used

        try:
            endpoint = await asyncio.to_thread(endpoint_from_here, self.host)
        except Exception as exc:  # noqa: BLE001 - the wait goes on the way the task saw it
            self.log.warning("Host %s: this dood config cannot be read (%s); using %s", self.host, exc, self.target.url)
            return
        if endpoint is None:
            self.log.info("Host %s is not in this triggerer's dood config; using %s", self.host, self.target.url)
            return
        if "${" in endpoint.url:  # a variable of the config that this process's environment lacks
            self.log.warning("Host %s: this dood config says %s; using %s", self.host, endpoint.url, self.target.url)
            return
        self.target = DockerTarget.of(endpoint)

    # -- waiting --------------------------------------------------------------------------------

    async def _watch(self, hub: EventHub) -> dict[str, Any]:
        """Subscribe, inspect, read events; on a broken stream reconnect with backoff and inspect again."""
        watch = _Watch()
        backoff = Backoff(self.retry_budget_seconds)
        while True:
            try:
                async with hub.feed(self.container_id) as stream:
                    backoff.reset()
                    if watch.outages.down_since is not None:
                        watch.outages.back()
                        self.log.warning("Docker answers again (%s)", watch.outages.describe())
                    payload = await self._wait_on(hub.docker, stream, watch)
                    if payload is not None and not await self._daemon_going(payload, watch):
                        return self._with_cause(payload, watch.outages)
                    problem = "the daemon stopped answering as the container was killed"
                    if payload is None:
                        problem = "the event stream ended"
            except aiodocker.DockerError as exc:  # also "cannot connect" (status 900)
                problem = str(exc)
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            watch.outages.down()
            delay = backoff.next_delay()
            if delay is None:
                return self._unreachable(problem, watch.outages.down_since)
            self.log.warning("Container %s: %s; reconnecting in %.1fs", self.container_id[:12], problem, delay)
            await asyncio.sleep(delay)

    async def _daemon_going(self, payload: dict[str, Any], watch: _Watch) -> bool:
        """Whether a kill (137/143) came with the daemon going away: a stream opened earlier still reports
        the kill while new connections fail (`dood.engine.reconnect`). Probed on a fresh connection, only for a
        kill no outage seen so far explains."""
        exit_code, oom = payload.get("exit_code"), payload.get("oom_killed")
        if exit_code not in KILL_EXIT_CODES or oom or watch.outages.periods:
            return False
        probe = self._docker()
        try:
            await probe.version()
            return False
        except (aiodocker.DockerError, aiohttp.ClientError, OSError, asyncio.TimeoutError):
            return True
        finally:
            await probe.close()

    def _with_cause(self, payload: dict[str, Any], outages: Outages) -> dict[str, Any]:
        """The payload, marked when the daemon's shutdown killed the container."""
        if payload["status"] != "failed" or not outages.killed_by_shutdown(
            payload.get("exit_code"), bool(payload.get("oom_killed")), payload.get("finished_at")
        ):
            return payload
        return replace(Outcome.from_event(payload), killed_by_daemon=shutdown_note(outages)).to_event(self.container_id)

    async def _wait_on(self, docker: aiodocker.Docker, stream: Feed, watch: _Watch) -> dict[str, Any] | None:
        """One connection's worth of waiting; None when the stream ended first."""
        info = await self._inspect(docker)
        if info is None:
            return await self._from_replay(docker, stream, watch)
        watch.learn(info)
        payload = self._ended_before(info, watch)
        if payload is not None:
            return payload
        return await self._next_outcome(docker, stream, watch)

    async def _from_replay(self, docker: aiodocker.Docker, stream: Feed, watch: _Watch) -> dict[str, Any]:
        """The container is gone: its exit may still be among the replayed events, else it vanished unseen."""
        try:
            payload = await asyncio.wait_for(self._next_outcome(docker, stream, watch), REPLAY_GRACE_SECONDS)
        except asyncio.TimeoutError:
            payload = None
        return payload or self._gone(oom_killed=watch.oom_seen)

    async def _next_outcome(self, docker: aiodocker.Docker, stream: Feed, watch: _Watch) -> dict[str, Any] | None:
        """Read events until one decides the outcome; None when the stream ends."""
        async for event in stream:
            if event.get("timeNano", 0) < watch.started_ns:
                continue  # noise, or a replayed event of an earlier run of this container
            action = event_action(event)
            if action == "oom":
                watch.oom_seen = True
            elif action == "die":
                return await self._after_die(docker, event, watch)
            elif action == "destroy":
                return self._gone(oom_killed=watch.oom_seen)  # removed without a die: never ran
        return None

    async def _after_die(self, docker: aiodocker.Docker, event: dict[str, Any], watch: _Watch) -> dict[str, Any]:
        """The outcome from the die event: its exit code and time, and whether an oom event came before it.

        Docker sets State.OOMKilled from that same OOM notice, received before the exit. Only a SIGKILL
        (137) may mean "force-removed" (Docker marks the container "removing" before killing it), so only
        then is it inspected: after a die Docker holds the container's lock while it cleans up, which
        makes an inspect take 0.1-1 s on a busy daemon. A force-removed container is reported as
        ``error``, not as the step's own failure.
        """
        exit_code = int((event.get("Actor") or {}).get("Attributes", {}).get("exitCode", -1))
        finished_at = event["timeNano"] / 1e9
        state: dict[str, Any] = {}
        if exit_code == SIGKILL_EXIT_CODE:
            info = await self._inspect(docker)
            if (info is None or info["State"].get("Status") == "removing") and not watch.auto_remove:
                return self._gone(exit_code=exit_code, finished_at=finished_at, oom_killed=watch.oom_seen)
            state = info["State"] if info else {}
        oom_killed = watch.oom_seen or bool(state.get("OOMKilled"))
        return self._ended(
            Outcome(exit_code=exit_code, oom_killed=oom_killed, error=state.get("Error") or ""), finished_at
        )

    def _ended_before(self, info: dict[str, Any], watch: _Watch) -> dict[str, Any] | None:
        """The payload when inspect shows the container already ended (or being removed), else None."""
        state = info["State"]
        status = state.get("Status")
        finished_ns = epoch_ns(state.get("FinishedAt"))
        finished_at = finished_ns / 1e9 if finished_ns else None
        outcome = Outcome.from_state(state)
        if status in ENDED or (status == "removing" and watch.auto_remove and finished_ns):
            return self._ended(outcome, finished_at)
        if status == "removing":
            exit_code = outcome.exit_code if finished_ns else None
            return self._gone(exit_code=exit_code, finished_at=finished_at, oom_killed=outcome.oom_killed)
        return None

    async def _inspect(self, docker: aiodocker.Docker) -> dict[str, Any] | None:
        """`docker inspect`, or None when the container does not exist; other failures raise."""
        try:
            return await docker.containers.container(self.container_id).show()
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return None
            raise

    def _docker(self) -> aiodocker.Docker:
        """A new session, created inside the event loop (never stored between runs): the endpoint's shared
        one when this wait is the first on it, or the probe of `_daemon_going`."""
        return async_docker(self.target)

    # -- payloads (their shape: dood.lifecycle.outcome) ---------------------------------------------------

    def _ended(self, outcome: Outcome, finished_at: float | None) -> dict[str, Any]:
        return replace(outcome, finished_at=finished_at).to_event(self.container_id)

    def _gone(
        self, *, exit_code: int | None = None, finished_at: float | None = None, oom_killed: bool = False
    ) -> dict[str, Any]:
        return gone_event(self.container_id, exit_code=exit_code, finished_at=finished_at, oom_killed=oom_killed)

    def _timed_out(self) -> dict[str, Any]:
        when = datetime.fromtimestamp(self.deadline or 0, tz=timezone.utc).isoformat()
        message = f"Container {self.container_id[:12]} was still running at the deadline {when}."
        return wait_event("timeout", self.container_id, message)

    def _unreachable(self, problem: str, since: float | None) -> dict[str, Any]:
        message = unreachable_message(
            self.target.url,
            since or time.time(),
            self.retry_budget_seconds,
            f"{problem} (while waiting for container {self.container_id[:12]})",
        )
        return wait_event("error", self.container_id, message, error_message=message)


def foreign_event(event: dict[str, Any], container_id: str) -> str | None:
    """Why a trigger event resuming a task is not about the container that task deferred on (None when it
    is): Airflow resumes the task instances deferred on the trigger id the event came from, and SQLite hands
    a deleted trigger's id to the next trigger created (a task cleared while deferred: its next try's), so
    the triggerer can take the new trigger for the old one, which keeps running and fires for the old
    container. Such an event is the cleared try's, never this one's outcome."""
    fired_for = str(event.get("container_id") or "")
    if not fired_for or fired_for == container_id:
        return None
    return (
        f"The trigger event is about container {fired_for[:12]}, not {container_id[:12]}, which this task deferred "
        "on: an earlier trigger answered under this trigger's id (SQLite reuses a deleted trigger's id; a clear "
        "deletes it). Its outcome is not this task's: waiting for this task's own container again."
    )


def _validate(
    container_id: object,
    api_version: str,
    deadline: float | None,
    timeout_seconds: float | None,
    retry_budget_seconds: float,
    stop_grace_seconds: int | None,
) -> None:
    if not isinstance(container_id, str) or not container_id:
        raise ValueError(f"container_id: a container id or name is required, got {container_id!r}")
    if not _API_VERSION.match(api_version):
        raise ValueError(f"api_version: use 'auto' or a version such as '1.41', got {api_version!r}")
    if deadline is not None and timeout_seconds is not None:
        raise ValueError("Give either deadline (absolute epoch seconds) or timeout_seconds (from now), not both.")
    if timeout_seconds is not None and timeout_seconds <= 0:
        raise ValueError(f"timeout_seconds: must be > 0, got {timeout_seconds!r}; omit it to wait forever")
    if retry_budget_seconds <= 0:
        raise ValueError(f"retry_budget_seconds: must be > 0, got {retry_budget_seconds!r}")
    if stop_grace_seconds is not None and stop_grace_seconds < 0:
        raise ValueError(
            f"stop_grace_seconds: must be >= 0 (or None to leave the container), got {stop_grace_seconds!r}"
        )


def _validate_settle(resume_not_before: float | None, settle_seconds: float | None) -> None:
    if resume_not_before is not None and settle_seconds is not None:
        raise ValueError("Give either resume_not_before (absolute epoch seconds) or settle_seconds, not both.")
    if settle_seconds is not None and settle_seconds < 0:
        raise ValueError(f"settle_seconds: must be >= 0 (0: no hold), got {settle_seconds!r}")


def _runs_root() -> str | None:
    """Where the stop note goes (the DooD page shows "stopping" from it); None when the config cannot be
    read: the stop itself never depends on it."""
    try:
        from dood.config.model import load_config

        return load_config().runs_root
    except Exception:  # noqa: BLE001 - a config broken during the wait must not keep the container running
        return None
