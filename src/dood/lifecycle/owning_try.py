"""Whether this try may still end its container: a try superseded by a later one never stops or removes.

A task runner whose supervisor was SIGKILLed keeps running, orphaned, while the scheduler starts the next
try, which adopts the same container. Labels cannot change after create and dood-proxy refuses renames,
so the engine cannot record the hand-over; Airflow can: every Task SDK call of a runner goes through its
own supervisor, so an orphan's call fails at once (broken socket). A try therefore asks Airflow before it
stops or removes: no answer means "superseded, or cut off from Airflow": leave the container to the try
that adopts it (or to the janitor), which is always recoverable, where a wrong removal loses a training.

The other way round, a container someone has begun to stop (a clear, a mark-failed, a timeout: the
engine recorded a `kill` event since it started) belongs to nobody any more: a later try never adopts it,
and runs a fresh one. A deferred task cleared can start its new try before the triggerer cancels the old
trigger, so the operator lets a few seconds pass before it looks (`ADOPTION_SETTLE_SECONDS`); a kill path
slower than that can still lose the race: the adopting try then sees the container end like any failure.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from docker import APIClient

    from dood.config.endpoints import DockerEndpoint
    from dood.lifecycle.logs import TaskLog
    from dood.naming import TaskIdentity

log = logging.getLogger(__name__)

NO_TASK_INSTANCE = "<missing>"  # Airflow has no such task instance (deleted run, unknown task)


def task_state(identity: TaskIdentity) -> str | None:
    """The task instance's state through the Task SDK, from inside a task runner (None: it has none yet);
    NO_TASK_INSTANCE when Airflow has no such task instance. The one spelling of the question: ownership
    (`airflow_state`) and the janitor's maintenance task ask it."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    states = RuntimeTaskInstance.get_task_states(
        dag_id=identity.dag_id,
        task_ids=[identity.task_id],
        run_ids=[identity.run_id],
        map_index=identity.map_index,
    )
    return states.get(identity.run_id, {}).get(identity.task_id, NO_TASK_INSTANCE)


def run_state(identity: TaskIdentity) -> str:
    """The state of the task instance's DAG run through the Task SDK (queued, running, success, failed);
    NO_TASK_INSTANCE when Airflow has no such run. Asked by the janitor about handed-off containers
    (`dood.handoff`): they are owned by the run while it runs."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    try:
        state = RuntimeTaskInstance.get_dagrun_state(dag_id=identity.dag_id, run_id=identity.run_id)
    except Exception:
        if RuntimeTaskInstance.get_dr_count(dag_id=identity.dag_id, run_ids=[identity.run_id]) == 0:
            return NO_TASK_INSTANCE  # deleted meanwhile (the janitor asks only when its task instance existed)
        raise
    return str(getattr(state, "value", state))


def airflow_state(identity: TaskIdentity) -> str | None:
    """The task instance's state as Airflow's API records it ("none" when it has none); None when this
    runner cannot reach Airflow (an orphaned runner: its supervisor is gone)."""
    try:
        state = task_state(identity)
        return "none" if state in (None, NO_TASK_INSTANCE) else state
    except Exception as exc:  # noqa: BLE001 - any failure means the same: Airflow did not answer us
        log.warning("Airflow's API cannot be reached from this task runner (%s: %s)", type(exc).__name__, exc)
        return None


def still_owner(identity: TaskIdentity | None) -> bool:
    """Whether this process may still stop or remove its container (no identity: not a task try, e.g. a
    sensor removing what it waited for, or a test)."""
    return identity is None or airflow_state(identity) is not None


def being_ended(api: APIClient, container: dict[str, Any]) -> bool:
    """Whether someone has signalled this running container (`docker stop`, `docker kill`) since it started:
    it is being ended, so it is not to be adopted. `container` is a `docker ps` entry."""
    started = int(container.get("Created") or 0)  # no earlier than its start; a restart is still "the same"
    try:
        kills = api.events(
            since=started,
            until=int(time.time()) + 1,
            filters={"type": "container", "container": container["Id"], "event": "kill"},
            decode=True,
        )
        return any(True for _ in kills)
    except Exception as exc:  # noqa: BLE001 - unknown: adopt (the earlier rule), rather than start a second
        log.warning("Could not read the events of container %s (%s)", container["Id"][:12], exc)
        return False


def end_if_owner(
    identity: TaskIdentity | None,
    endpoint: Callable[[], DockerEndpoint],
    container_id: str,
    grace_seconds: int,
    reason: str,
    *,
    leave_if_running: bool,
    log: TaskLog = log,
) -> bool:
    """Stop (SIGTERM, the grace period, SIGKILL), then remove, in a process that outlives this one
    (`dood.lifecycle.teardown`: the supervisor SIGKILLs a task runner 5 s after its SIGTERM). Left alone, and False
    returned, when this try may no longer own it: Airflow is out of reach (an orphaned runner: a later try
    adopts it), or, with `leave_if_running`, Airflow still records the try as running (a worker's warm
    shutdown: the next try reattaches). `endpoint`: the container's host's Docker, asked only when needed."""
    from dood.engine.target import DockerTarget
    from dood.lifecycle.teardown import detach

    state = airflow_state(identity) if identity else "unknown"
    if state is None or (leave_if_running and state == "running"):
        why = "Worker is shutting down while the task is still running"
        if state is None:
            why = "This runner cannot reach Airflow (its supervisor is gone; a later try may own it)"
        log.warning(
            "%s: leaving container %s running for the next try to reattach (reattach=True).", why, container_id[:12]
        )
        return False
    ending = detach(
        DockerTarget.of(endpoint()), container_id, grace_seconds, runs_root=_runs_root(), who=f"{reason} ({state})"
    )
    log.info(
        "%s (state %s): stopping container %s (grace %ss), then removing it, in pid %s, which outlives this "
        "task runner.",
        reason,
        state,
        container_id[:12],
        grace_seconds,
        ending.pid,
    )
    log.info("%s", ending.wait())
    return True


def _runs_root() -> str | None:
    """Where this worker sees run directories ($DOOD_CONFIG's runs_root), for the DooD page's stop note."""
    try:
        from dood.config.model import load_config

        return load_config().runs_root
    except Exception:  # noqa: BLE001 - the note is a display aid: a stop never waits for it
        return None
