"""Following a container to its end across Docker daemon restarts (the blocking wait, and the sensor):
forward its output, wait for its exit, read how it ended.

When the daemon stops answering, the wait waits for it (`dood.engine.reconnect`, bounded by
``docker.unreachable_timeout_seconds``). With live-restore the container survived: its logs resume where
the broken stream left off and the wait goes on. Without, the daemon's shutdown killed it: the outcome says
so (`Outcome.killed_by_daemon`), so the task fails as a retryable accident, not as the step's own failure.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from dood.engine.reconnect import Reconnector, is_unreachable, shutdown_note
from dood.lifecycle.logs import DEFAULT_TAIL_LINES

if TYPE_CHECKING:
    from dood.lifecycle.launch import ContainerLauncher, Outcome

Output = Iterator[tuple[bytes | None, bytes | None]]


@dataclass(frozen=True)
class Followed:
    outcome: Outcome
    tail: list[str]


def follow_to_end(
    launcher: ContainerLauncher,
    container_id: str,
    name: str,
    emit: Callable[[str], None],
    reconnect: Reconnector,
    *,
    follow: bool,
    output: Output | None = None,
    outcome: Outcome | None = None,
    lines_per_record: int = 1,
) -> Followed:
    """Forward the output (`output`: a live attach stream; else the logs, followed or read once), then wait
    for the exit unless `outcome` is already known. Survives daemon restarts as the module says."""
    tail: deque[str] = deque(maxlen=DEFAULT_TAIL_LINES)
    follow = follow or output is not None  # a live stream broken by an outage goes on as followed logs
    since: float | None = None  # where the logs resume after an outage
    logs_read = False
    while True:
        try:
            if output is not None:
                stream, output = output, None
                launcher.forward_output(stream, emit, lines_per_record=lines_per_record, tail=tail)
            elif follow or not logs_read:
                launcher.forward_logs(
                    container_id, emit, follow=follow, lines_per_record=lines_per_record, since=since, tail=tail
                )
            logs_read = True
            ended = outcome or launcher.wait(container_id, name=name)
            return Followed(_with_cause(launcher, container_id, ended, reconnect), list(tail))
        except Exception as exc:
            if not is_unreachable(exc):
                raise
            if follow:  # resume where the stream broke off: a line or two may show twice, none is lost
                since = time.time() - 1
            reconnect.until_back(exc, lambda: _fresh_ping(launcher))


def _with_cause(launcher: ContainerLauncher, container_id: str, outcome: Outcome, reconnect: Reconnector) -> Outcome:
    """The outcome, marked when the daemon's shutdown killed the container.

    A wait opened before the daemon began to shut down still reports the kill, while a new connection
    fails: so a kill (137/143) is followed by a probe on a fresh connection; when that fails, the daemon is
    going, and its return is awaited (the container is still to be removed) before the outcome is re-read.
    """
    if outcome.exit_code not in (137, 143) or outcome.oom_killed:
        return outcome
    if not reconnect.outages.periods:
        try:
            _fresh_ping(launcher)
        except Exception as exc:
            if not is_unreachable(exc):
                raise
            reconnect.until_back(exc, lambda: _fresh_ping(launcher))
            outcome = reconnect.call(lambda: launcher.outcome(container_id))
    if reconnect.outages.killed_by_shutdown(outcome.exit_code, outcome.oom_killed, outcome.finished_at):
        return replace(outcome, killed_by_daemon=shutdown_note(reconnect.outages))
    return outcome


def _fresh_ping(launcher: ContainerLauncher) -> None:
    """Ping over a new connection: a kept-alive one may still reach a daemon that is shutting down."""
    launcher.api.close()
    launcher.api.ping()
