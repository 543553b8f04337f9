"""How a launched container's end becomes the task's end: deadline, resume, logs, outcome, result, removal.

What `pod_manager` is to the Kubernetes provider: written once and called by the blocking operator, the
deferrable operator's resume, and the sensor, so "wait for a container and read its outcome" behaves the
same on every path. The shapes it reads live beside it: the trigger's event and Docker's states in
`dood.lifecycle.outcome`, stopping and removing in `dood.lifecycle.teardown`, "is this try still Airflow's"
in `dood.lifecycle.owning_try`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from docker.errors import NotFound

from dood.engine.reconnect import Reconnector
from dood.exceptions import ContainerFailed, DoodConfigError, DoodError
from dood.lifecycle.follow import follow_to_end
from dood.lifecycle.gone import ContainerGone
from dood.lifecycle.outcome import RESUME_KEY, Outcome
from dood.lifecycle.owning_try import still_owner
from dood.lifecycle.results import NO_RETRY_EXIT_CODE, read_result, run_dir_for

if TYPE_CHECKING:
    from dood.config.model import AutoRemove, DoodConfig
    from dood.lifecycle.launch import ContainerLauncher
    from dood.naming import TaskIdentity

log = logging.getLogger(__name__)


class ContainerFailedNoRetry(ContainerFailed, AirflowFailException):
    """The container exited with the no-retry code ($DOOD_NO_RETRY_EXIT_CODE): its failure is final (a failed
    quality gate), so Airflow fails the task without spending its retries. Defined here, beside the one mapping
    of a container's end to Airflow's skip and fail semantics (`conclude`); every other dood error is plain."""


@dataclass(frozen=True)
class ContainerHandle:
    """A durable reference to a launched container: enough for any process to find it and its result."""

    container_id: str
    container_name: str
    run_dir: str
    host: str | None = None  # the Docker host it runs on, when the deployment has several (`hosts:`)

    def to_xcom(self) -> dict[str, str]:
        value = asdict(self)
        if self.host is None:  # one Docker host: the handle as it always was
            del value["host"]
        return value

    @classmethod
    def from_xcom(cls, value: dict[str, str]) -> ContainerHandle:
        return cls(**{key: value[key] for key in ("container_id", "container_name", "run_dir")}, host=value.get("host"))

    @classmethod
    def of(cls, container_id: str, container_name: str, runs_root: str, host: str | None = None) -> ContainerHandle:
        return cls(container_id, container_name, run_dir_for(runs_root, container_name), host)

    @classmethod
    def resumed(
        cls, handle: dict[str, str] | None, event: dict[str, Any], api, runs_root: str, host: str | None = None
    ) -> ContainerHandle:
        """The handle given to `defer`, or rebuilt from the trigger event where a runner dropped it
        (`dag.test()` in Airflow 3.3 passes only the event: the handle it carries, else inspected, then on
        `host`, the resuming worker's)."""
        handle = handle or (event.get(RESUME_KEY) or {}).get("handle")
        if handle:
            return cls.from_xcom(handle)
        try:
            name = api.inspect_container(event["container_id"])["Name"].lstrip("/")
        except NotFound:  # removed meanwhile (a kill path of an earlier try): say so, not a raw 404
            exit_code = event.get("exit_code")
            raise ContainerGone(event["container_id"][:12], int(exit_code) if exit_code is not None else None) from None
        return cls.of(event["container_id"], name, runs_root, host)


def task_deadline(context: Mapping[str, Any], timeout: timedelta | float | None) -> float | None:
    """When a task's time runs out (epoch seconds): its start plus `timeout` (execution_timeout, or a
    sensor's timeout in seconds); None without one. Absolute, so a deferral or a triggerer restart does
    not restart the clock. A task instance without a start date counts from now, never from 1970."""
    if not timeout:
        return None
    if not isinstance(timeout, timedelta):
        timeout = timedelta(seconds=float(timeout))
    started = context["ti"].start_date or datetime.now(timezone.utc)
    return (started + timeout).timestamp()


def resume_carry(
    handle: ContainerHandle, config: DoodConfig, *, auto_remove: AutoRemove | None, stop_grace_seconds: int, stack: str
) -> dict[str, Any]:
    """What a deferred task's resume needs to finish without reading its dood config, given to its trigger
    (`DoodContainerTrigger(resume=...)`), which echoes it, with the Docker endpoint it was handed, in its
    event (`dood.lifecycle.outcome.RESUME_KEY`): the handle (its run directory), the result's size limit, the removal
    policy in force, the log batching, the grace period and the stack. Read only when the config cannot be
    (`carried_config`)."""
    return {
        "handle": handle.to_xcom(),
        "max_result_bytes": config.max_result_bytes,
        "auto_remove": auto_remove or config.defaults.auto_remove,
        "log_lines_per_record": config.defaults.log_lines_per_record,
        "stop_grace_seconds": stop_grace_seconds,
        "docker_timeout_seconds": config.reachable_docker.timeout_seconds,
        "stack": stack,
    }


#: What `carried_config` cannot do without, as named in its error.
_CARRIED = ("handle", "max_result_bytes", "auto_remove", "log_lines_per_record", "stop_grace_seconds", "stack")


def carried_config(event: Mapping[str, Any], handle: Mapping[str, str] | None, problem: DoodConfigError) -> DoodConfig:
    """The config a resume finishes with when its own cannot be read (`problem`): the Docker endpoint, run
    directory and settings its trigger's event carries (`resume_carry`), nothing else (no policy, no mount
    map: a resume creates nothing). A DoodConfigError saying what is missing when the event lacks any (a
    trigger deferred by an older dood carries none)."""
    from dood.config.model import DoodConfig  # the model, only on this rare path

    carried = dict(event.get(RESUME_KEY) or {})
    docker = carried.get("docker") or {}
    handle = handle or carried.get("handle")
    missing = [key for key in _CARRIED if carried.get(key) is None and not (key == "handle" and handle)]
    if not docker.get("url"):
        missing.insert(0, "the Docker endpoint")
    if missing:
        container = (handle or {}).get("container_name") or str(event.get("container_id") or "?")[:12]
        raise DoodConfigError(
            f"{problem}\nThe resume of container {container} cannot go on without it: its trigger's event does not "
            f"carry {', '.join(missing)} (a trigger deferred by an older dood carries none). The container is left "
            f"as it is ({event.get('message') or 'its outcome unread'}). Fix the config, then clear the task; the "
            "janitor removes the container."
        ) from None
    assert handle is not None  # noqa: S101 - narrowing: every path above returned or raised without one
    try:
        config = DoodConfig.model_validate(
            {
                "stack": carried["stack"],
                "docker": {
                    "url": docker["url"],
                    "api_version": docker.get("api_version") or "auto",
                    "timeout_seconds": carried.get("docker_timeout_seconds") or 120,
                    "unreachable_timeout_seconds": max(
                        1, math.ceil(float(docker.get("unreachable_timeout_seconds") or 120))
                    ),
                    "tls_ca_cert": docker.get("tls_ca_cert"),
                    "tls_client_cert": docker.get("tls_client_cert"),
                    "tls_client_key": docker.get("tls_client_key"),
                },
                "runs_root": os.path.dirname(handle["run_dir"]),
                "max_result_bytes": carried["max_result_bytes"],
                "mount_discovery": {"mode": "off"},
                "defaults": {
                    "auto_remove": carried["auto_remove"],
                    "log_lines_per_record": carried["log_lines_per_record"],
                    "stop_grace_period_seconds": carried["stop_grace_seconds"],
                },
            }
        )
    except ValueError as exc:  # pydantic's ValidationError is one
        raise DoodConfigError(f"{problem}\nWhat the trigger's event carries is no config either: {exc}") from None
    config._host = handle.get("host")
    return config


def resume_config(
    load: Callable[[], DoodConfig],
    event: Mapping[str, Any],
    handle: Mapping[str, str] | None,
    warn: Callable[..., None],
) -> tuple[DoodConfig, bool]:
    """The config a deferred task resumes with: its dood config (`load`), else, when that cannot be read (made
    invalid while the task waited), what the trigger's event carries (`carried_config`), with a warning
    saying so. True when carried: the endpoint is then already the container's host's."""
    try:
        return load(), False
    except DoodConfigError as problem:
        config = carried_config(event, handle, problem)
        reason = str(problem).splitlines()[0]
    carried = handle or (event.get(RESUME_KEY) or {}).get("handle") or {}
    warn(
        "The dood config cannot be read (%s). Finishing container %s with what its trigger carried: Docker at "
        "%s, run directory %s, max_result_bytes %s, auto_remove %s, stop grace %ss. Fix the config: every task "
        "that starts meanwhile fails.",
        reason,
        carried.get("container_name"),
        config.docker.url,
        carried.get("run_dir"),
        config.max_result_bytes,
        config.defaults.auto_remove,
        config.defaults.stop_grace_period_seconds,
    )
    return config, True


def resume(event: Mapping[str, Any], container_name: str) -> Outcome:
    """The outcome a `DoodContainerTrigger` event carries (`dood.lifecycle.outcome`). A container removed before its
    outcome was read raises ContainerGone, a wait that failed (Docker unreachable) DoodError; a `timeout`
    is the caller's to handle first (the operator ends the container, the sensor only reports)."""
    gone = ContainerGone.from_event(container_name, dict(event))
    if gone is not None:
        raise gone
    if event.get("status") not in ("success", "failed"):
        raise DoodError(f"Waiting for container {container_name} failed: {event.get('message')}")
    return Outcome.from_event(event)


def conclude(
    handle: ContainerHandle,
    outcome: Outcome,
    tail: Sequence[str],
    *,
    skip_on_exit_code: Collection[int],
    max_result_bytes: int,
) -> Any:
    """Map an ended container to Airflow's success (its result), skip, or failure. A container the Docker
    daemon's shutdown killed is a retryable failure, never a skip nor a final failure."""
    if outcome.killed_by_daemon:
        raise ContainerFailed(
            container=handle.container_name,
            exit_code=outcome.exit_code,
            oom_killed=False,
            log_tail=list(tail),
            error=outcome.error,
            killed_by_daemon=outcome.killed_by_daemon,
        )
    if outcome.exit_code != 0 and outcome.exit_code in skip_on_exit_code:
        raise AirflowSkipException(
            f"Container {handle.container_name} exited with code {outcome.exit_code} (skip_on_exit_code)"
        )
    if outcome.exit_code != 0:
        final = outcome.exit_code == NO_RETRY_EXIT_CODE
        raise (ContainerFailedNoRetry if final else ContainerFailed)(
            container=handle.container_name,
            exit_code=outcome.exit_code,
            oom_killed=outcome.oom_killed,
            log_tail=list(tail),
            error=outcome.error,
        )
    return read_result(handle.run_dir, max_result_bytes)


def finish(
    launcher: ContainerLauncher,
    handle: ContainerHandle,
    config: DoodConfig,
    *,
    emit: Callable[[str], None],
    follow: bool,
    skip_on_exit_code: Collection[int],
    auto_remove: AutoRemove | None = None,
    outcome: Outcome | None = None,
    output: Iterator[tuple[bytes | None, bytes | None]] | None = None,
    owner: TaskIdentity | None = None,
) -> Any:
    """Show the logs (following them while the container runs, or all at once after it ended), wait for
    its end, conclude, and remove it as the policy says (`auto_remove`, else the config's default).

    Only an ended container whose outcome was read here is removed, and only while `owner` (the try that
    launched or adopted it) is still the current try: an orphaned earlier try never removes what a later
    try adopted. Whatever else went wrong (a timeout, a kill, Docker), ending it is the caller's call.
    """
    auto_remove = auto_remove or config.defaults.auto_remove
    lines_per_record = config.defaults.log_lines_per_record
    max_result_bytes = config.max_result_bytes
    concluded = False
    outcome_read = outcome is not None
    # the daemon not answering (a restart) is waited for, within docker.unreachable_timeout_seconds
    reconnect = Reconnector(config.docker.url, config.docker.unreachable_timeout_seconds)
    try:
        followed = follow_to_end(  # `output`: attached before start, the live stream, complete and cheap to read
            launcher,
            handle.container_id,
            handle.container_name,
            emit,
            reconnect,
            follow=follow,
            output=output,
            outcome=outcome,
            lines_per_record=lines_per_record,
        )
        outcome = followed.outcome
        outcome_read = True
        try:
            result = conclude(
                handle,
                outcome,
                followed.tail,
                skip_on_exit_code=skip_on_exit_code,
                max_result_bytes=max_result_bytes,
            )
        except AirflowSkipException:
            concluded = True
            raise
        concluded = True
        return result
    finally:
        removable = outcome_read and (auto_remove == "always" or (auto_remove == "on_success" and concluded))
        if removable and still_owner(owner):
            reconnect.call(lambda: launcher.remove(handle.container_id))
        elif removable:
            log.warning(
                "Not removing container %s: this try can no longer reach Airflow, so a later try may own it.",
                handle.container_name,
            )
