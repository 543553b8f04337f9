"""How a container ended, and the one event shape that carries it from the triggerer to the task.

The trigger encodes (`ended_event`, `gone_event`, `wait_event`), the operator and the sensor decode
(`dood.lifecycle.completion.resume`), so the keys live here once. Docker's container states, and what each means for
a run, are named here too: every module that asks "still going?", "ended?" or "holding GPUs?" reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from dood.lifecycle.docker_time import epoch_ns
from dood.lifecycle.gone import gone_message

#: Docker's states of a container that has not ended yet (a sensor keeps waiting).
STILL_GOING = ("created", "running", "restarting", "paused")
#: States in which a started container holds what it was given (its GPUs): it has run and not ended.
RUNNING = ("running", "restarting", "paused")
#: States of a container that has ended; its outcome can be read.
ENDED = ("exited", "dead")
#: States of a container that is not running: a leftover of the same try may be removed before a create.
NOT_RUNNING = ("created", "exited", "dead")

EventStatus = Literal["success", "failed", "error", "timeout"]

#: The event's key for what a deferred task's resume needs when its own dood config cannot be read there (a
#: config made invalid while it waited): the handle, the Docker endpoint, the finishing settings
#: (`dood.lifecycle.completion.resume_carry`, `carried_config`). The trigger echoes it into every event it fires.
RESUME_KEY = "resume"
#: The event's key, on a ``timeout``, saying that the trigger itself has begun to end the container (stop, then
#: remove, in a process of its own): the resume, which Airflow may terminate, need not end it again.
ENDING_KEY = "ending"


@dataclass(frozen=True)
class Outcome:
    """How a container ended. `killed_by_daemon`: the Docker daemon's shutdown killed it (a restart without
    live-restore, `dood.engine.reconnect`), with what the waiter saw of the outage."""

    exit_code: int
    oom_killed: bool = False
    error: str = ""
    finished_at: float | None = None  # epoch seconds, from Docker's FinishedAt
    killed_by_daemon: str = ""

    @classmethod
    def from_state(cls, state: Mapping[str, Any], wait_result: Mapping[str, Any] | None = None) -> Outcome:
        """From `docker inspect`'s State; a wait result's code and error win when given."""
        exit_code = wait_result["StatusCode"] if wait_result else state["ExitCode"]
        error = ((wait_result or {}).get("Error") or {}).get("Message") or state.get("Error") or ""
        finished_at = epoch_ns(state.get("FinishedAt")) / 1e9 or None
        return cls(exit_code=exit_code, oom_killed=bool(state.get("OOMKilled")), error=error, finished_at=finished_at)

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> Outcome:
        """The outcome an `ended_event` carries."""
        return cls(
            exit_code=int(event["exit_code"]),
            oom_killed=bool(event.get("oom_killed")),
            error=event.get("error_message") or "",
            finished_at=event.get("finished_at"),
            killed_by_daemon=event.get("killed_by_daemon") or "",
        )

    def to_event(self, container_id: str) -> dict[str, Any]:
        """The trigger event of a container that ended this way (success or failed)."""
        oom = " (killed by the kernel: out of memory)" if self.oom_killed else ""
        message = f"Container {container_id[:12]} exited with code {self.exit_code}{oom}"
        if self.killed_by_daemon:
            message += f", {self.killed_by_daemon}"
        event = wait_event(
            "success" if self.exit_code == 0 else "failed",
            container_id,
            message + ".",
            exit_code=self.exit_code,
            oom_killed=self.oom_killed,
            error_message=self.error,
            finished_at=self.finished_at,
        )
        if self.killed_by_daemon:
            event["killed_by_daemon"] = self.killed_by_daemon
        return event


def wait_event(status: EventStatus, container_id: str, message: str, **fields: Any) -> dict[str, Any]:
    """A trigger event; `fields`: exit_code, oom_killed, error_message, finished_at (absent ones empty)."""
    return {
        "status": status,
        "container_id": container_id,
        "exit_code": fields.get("exit_code"),
        "oom_killed": bool(fields.get("oom_killed")),
        "error_message": fields.get("error_message", ""),
        "finished_at": fields.get("finished_at"),
        "message": message,
    }


def gone_event(
    container_id: str, *, exit_code: int | None = None, finished_at: float | None = None, oom_killed: bool = False
) -> dict[str, Any]:
    """The event of a container removed before its outcome was read (`dood.lifecycle.gone.ContainerGone` on resume)."""
    message = gone_message(container_id[:12], exit_code)
    event = wait_event(
        "error",
        container_id,
        message,
        exit_code=exit_code,
        oom_killed=oom_killed,
        error_message=message,
        finished_at=finished_at,
    )
    return {**event, "gone": True}
