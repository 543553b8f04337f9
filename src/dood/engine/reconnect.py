"""A Docker daemon that stops answering: why (the classic DooD causes), waiting for it to answer again
(bounded, with backoff), and what its restart did to the container being waited for.

Written once; the blocking wait (`dood.lifecycle.follow`), the deferred task's resume and the trigger all use it.
A restart is transient: a wait reconnects with jittered exponential backoff for up to
``docker.unreachable_timeout_seconds`` (config), then fails with "Docker daemon unreachable since <time>".

How a restart looks from a waiter (dockerd 20.10): on SIGTERM the daemon first closes its API listener
(a unix socket's file is unlinked), then, unless ``live-restore`` is on, stops its containers (SIGTERM,
``--shutdown-timeout``, SIGKILL: exit 143 or 137), then exits. Connections opened before keep working
until it exits, so a wait or an event stream opened earlier still reports the container's death while
every new connection fails. Hence: a container killed (137/143, not OOM) within an outage this wait saw,
or just before one, was killed by the daemon's shutdown. With live-restore it survives, and the wait
simply goes on once the daemon answers again.
"""

from __future__ import annotations

import logging
import os
import random
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TypeVar

import requests
import urllib3

from dood.exceptions import DockerUnreachable

log = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 10.0
KILL_EXIT_CODES = frozenset({137, 143})  # SIGKILL, SIGTERM: how a daemon's shutdown ends a container
# A kill this long before the outage was first noticed still counts as the shutdown's: the daemon stops its
# containers (up to its --shutdown-timeout, 15 s by default) before the waiter's next new connection fails.
SHUTDOWN_MARGIN_SECONDS = 60.0
_UNREACHABLE = (
    requests.exceptions.ConnectionError,  # refused, socket file missing, connection aborted mid-call
    requests.exceptions.ChunkedEncodingError,  # a streamed answer cut off
    urllib3.exceptions.ProtocolError,
    ConnectionError,
    DockerUnreachable,
)


def is_unreachable(exc: BaseException) -> bool:
    """Whether this error of a Docker call means "no daemon answers" (rather than a refusal or a bug)."""
    if isinstance(exc, _UNREACHABLE):
        return True
    # docker.APIClient(version="auto") wraps the connection error of its version probe
    cause = exc.__cause__ or exc.__context__
    return type(exc).__name__ == "DockerException" and cause is not None and isinstance(cause, _UNREACHABLE)


def explain_unreachable(url: str, *, answered_before: bool = False) -> str:
    """Why no Docker daemon answers at `url`, and the fix, for the classic DooD cases. `answered_before`:
    this daemon answered earlier in this task, so a missing socket means it is restarting, not unmounted."""
    if not url.startswith("unix://"):
        return (
            f"No Docker daemon answers at {url}. Check docker.url (or $DOCKER_HOST), the TLS settings, and that "
            "the daemon or socket proxy listens there."
        )
    path = "/" + url.removeprefix("unix://").lstrip("/")
    who = f"uid {os.getuid()}, groups {sorted({os.getgid(), *os.getgroups()})}"
    if not os.path.exists(path) and answered_before:
        return (
            f"The Docker socket {path} is gone, though the daemon answered on it earlier in this task: dockerd "
            "removes its socket while it shuts down or restarts."
        )
    if not os.path.exists(path):
        where = "container" if os.path.exists("/.dockerenv") else "machine"
        return (
            f"The Docker socket {path} does not exist in this {where}. "
            "Mount the host's socket into the Airflow services that run tasks or triggers (docker-compose: "
            "`- /var/run/docker.sock:/var/run/docker.sock`), or point docker.url at the daemon."
        )
    info = os.stat(path)
    if not os.access(path, os.R_OK | os.W_OK):
        return (
            f"Permission denied on the Docker socket {path} (owner uid {info.st_uid}, group {info.st_gid}, "
            f"{stat.filemode(info.st_mode)}); this process runs as {who}. Give it the socket's group: in "
            f'docker-compose, `group_add: ["${{DOCKER_GID}}"]` with DOCKER_GID=$(stat -c %g /var/run/docker.sock) '
            f"on the host ({info.st_gid} here); on a host install, add the Airflow user to that group."
        )
    if answered_before:
        return (
            f"The Docker socket {path} is there but no daemon answers on it any more: dockerd is restarting, or "
            "this is a bind mount of the socket file that still shows the old daemon's socket (after a restart "
            "with live-restore, mount the socket's directory instead, or restart the Airflow containers)."
        )
    return (
        f"The Docker socket {path} is accessible ({who}) but no daemon answers on it: is dockerd running on the "
        "host, and is this the host's socket rather than a stale file?"
    )


def utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="seconds")


def unreachable_message(url: str, since: float, budget_seconds: float, problem: str) -> str:
    return (
        f"Docker daemon unreachable since {utc(since)} (gave up after {budget_seconds:g}s, "
        f"docker.unreachable_timeout_seconds) at {url}: {problem}"
    )


class Backoff:
    """Jittered exponential delays between reconnects, within a budget of seconds spent failing in a row.

    The jitter keeps hundreds of waiters from reconnecting in lockstep after a daemon restart. Used by every
    wait: `Reconnector` (blocking), `DoodContainerTrigger` and `DoodGpuTrigger` (async: they sleep themselves).
    `clock`: monotonic seconds (`time.monotonic` when None), for a test's own clock.
    """

    def __init__(self, budget_seconds: float, *, clock: Callable[[], float] | None = None) -> None:
        self.budget_seconds = budget_seconds
        self._clock = clock
        self.reset()

    def reset(self) -> None:
        self._failing_since: float | None = None
        self._delay = FIRST_RETRY_SECONDS

    def next_delay(self) -> float | None:
        """Seconds to sleep before the next attempt, or None once the budget is spent."""
        now = self._clock() if self._clock is not None else time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        left = self.budget_seconds - (now - self._failing_since)
        if left <= 0:
            return None
        delay = min(self._delay * random.uniform(0.5, 1.0), left)  # noqa: S311 - jitter
        self._delay = min(self._delay * 2, MAX_RETRY_SECONDS)
        return delay


@dataclass
class Outages:
    """The periods one wait found the daemon unreachable: (down since, back at), epoch seconds."""

    periods: list[tuple[float, float | None]] = field(default_factory=list)

    @property
    def down_since(self) -> float | None:
        """Start of the outage going on now, if any."""
        return self.periods[-1][0] if self.periods and self.periods[-1][1] is None else None

    def down(self, at: float | None = None) -> None:
        if self.down_since is None:
            self.periods.append((time.time() if at is None else at, None))

    def back(self, at: float | None = None) -> None:
        if self.down_since is not None:
            self.periods[-1] = (self.periods[-1][0], time.time() if at is None else at)

    def killed_by_shutdown(self, exit_code: int | None, oom_killed: bool, finished_at: float | None) -> bool:
        """Whether a container that ended so was killed by the daemon's shutdown (see the module's notes)."""
        if exit_code not in KILL_EXIT_CODES or oom_killed or not finished_at:
            return False
        now = time.time()
        return any(
            start - SHUTDOWN_MARGIN_SECONDS <= finished_at <= (now if end is None else end)
            for start, end in self.periods
        )

    def describe(self) -> str:
        """The last outage, for a message: "from … to …"."""
        start, end = self.periods[-1]
        return f"unreachable from {utc(start)} to {utc(end) if end else 'now'}"


def shutdown_note(outages: Outages) -> str:
    return (
        f"killed by the Docker daemon's shutdown (the daemon was {outages.describe()}; without live-restore "
        "a daemon restart stops every container), not by the step itself: Airflow retries it"
    )


class Reconnector:
    """Synchronous waits: wait for the daemon to answer again, within ``budget_seconds`` of failing in a row;
    every outage seen is kept in ``outages``."""

    def __init__(
        self, url: str, budget_seconds: float, *, sleep: Callable[[float], None] = time.sleep, answered_before=True
    ) -> None:
        self.url = url
        self.budget_seconds = budget_seconds
        self.outages = Outages()
        self._sleep = sleep
        self._answered_before = answered_before

    def until_back(self, problem: BaseException, ping: Callable[[], object]) -> None:
        """A call just failed with `problem` (an unreachable daemon): retry `ping` with backoff until it
        succeeds; DockerUnreachable ("Docker daemon unreachable since …") once the budget is spent."""
        self.outages.down()
        backoff = Backoff(self.budget_seconds)
        while True:
            delay = backoff.next_delay()
            if delay is None:
                since = self.outages.down_since or time.time()
                raise DockerUnreachable(
                    unreachable_message(self.url, since, self.budget_seconds, self.describe(problem))
                ) from problem
            log.warning("Docker at %s does not answer (%s); trying again in %.1fs", self.url, _short(problem), delay)
            self._sleep(delay)
            try:
                ping()
            except Exception as exc:
                if not is_unreachable(exc):
                    raise
                problem = exc
                continue
            self.outages.back()
            log.warning("Docker at %s answers again (%s)", self.url, self.outages.describe())
            return

    def call(self, function: Callable[[], T]) -> T:
        """`function()`, retried while the daemon does not answer."""
        while True:
            try:
                return function()
            except Exception as exc:
                if not is_unreachable(exc):
                    raise
                self.until_back(exc, function)

    def describe(self, problem: BaseException) -> str:
        if isinstance(problem, DockerUnreachable):
            return str(problem)
        return f"{explain_unreachable(self.url, answered_before=self._answered_before)} ({_short(problem)})"


def _short(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text[:200]}"
