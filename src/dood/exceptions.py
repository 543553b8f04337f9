"""Domain errors that carry their context, so a failed task's log says what happened and what to do.

Plain exceptions, free of Airflow (Airflow 3 fails a task on any exception): the policy and dood-proxy raise
and import them without Airflow. The one mapping to Airflow's skip and no-retry semantics is
`dood.lifecycle.completion.conclude` (`AirflowSkipException`, `ContainerFailedNoRetry`). A DAG catches them
from `dood` (`from dood import ContainerFailed`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class DoodError(Exception):
    """Base of every error raised by dood."""


class DoodConfigError(DoodError, ValueError):
    """The shared config or an operator argument is invalid; raised before any container exists."""


class DockerUnreachable(DoodError):
    """No Docker daemon answers; the message says why (socket not mounted, permission, daemon down) and the fix."""


class MountNotMapped(DoodConfigError):
    """A bind source lies outside every mount-map entry, so the host daemon could not find it."""


class MountMapConflict(DoodError):
    """The configured mount map and the one discovered from our own container disagree."""


class BindSourceMissing(DoodConfigError):
    """A bind source does not exist where dood can see it; Docker would refuse the container (or, with the
    old `-v` syntax, create an empty root-owned directory there)."""

    def __init__(self, *, field: str, spec: str, source: str, host_path: str) -> None:
        self.field = field
        self.source = source
        self.host_path = host_path
        where = "" if host_path == source else f" (on the Docker host: {host_path!r})"
        super().__init__(
            f"{field}: the bind source of mount {spec!r} does not exist: {source!r}{where}, so the Docker host "
            "cannot mount it. Nothing was created. Fix the path in the task's `mounts`, or create the directory "
            f"first (`mkdir -p {host_path}` on the Docker host, writable by the step's user if it writes there)."
        )


class ImageUnavailable(DoodConfigError):
    """The image is not on the Docker host and pulling it failed; raised before anything is created."""

    def __init__(self, *, image: str, reason: str, pull_policy: str) -> None:
        self.image = image
        self.reason = reason
        where = "is not on the Docker host and pulling it" if pull_policy != "always" else "could not be pulled: it"
        super().__init__(
            f"image: {image!r} {where} failed ({reason}). Nothing was created. Build it on the Docker host "
            f"(`docker build -t {image} <dir>`; this project's images: `make images`), check the image name and "
            "tag (the task's `image`; a pipeline step's `image` and the run's image_tag), or, for a private "
            "registry, set `docker.conn_id` in the dood config to an Airflow connection (type docker) that logs "
            "in to it."
        )


class InvalidPipelines(DoodConfigError):
    """Pipelines of the config that are invalid, so they have no DAG; the others are unaffected."""

    def __init__(self, errors: Mapping[str, str], source: str) -> None:
        self.errors = dict(errors)
        self.source = source
        listing = "\n".join(f"pipeline {name!r} (DAG dood_{name}):\n{problems}" for name, problems in errors.items())
        count = f"{len(errors)} pipeline{'s' if len(errors) != 1 else ''}"
        super().__init__(
            f"{count} of the dood config {source} {'is' if len(errors) == 1 else 'are'} invalid and "
            f"{'has' if len(errors) == 1 else 'have'} no DAG; every other pipeline keeps its DAG, and "
            f"dood_janitor runs as before.\n{listing}\n"
            "Fix these fields in the config (reference: README.md#configuration); the DAG appears at the next parse."
        )


class ForeignContainerError(DoodError):
    """A container with our name exists but is not ours; we never touch it."""

    def __init__(self, name: str, container_id: str, reason: str) -> None:
        self.name = name
        self.container_id = container_id
        super().__init__(
            f"A container named {name!r} (id {container_id[:12]}) already exists and {reason}. "
            "dood never stops or removes containers it does not own: rename or remove that container "
            f"yourself (`docker rm -f {name}`) if it is safe, then retry."
        )


class ResultFileError(DoodError):
    """The container wrote a result file that cannot become an XCom value."""


class ContainerFailed(DoodError):
    """A launched container exited non-zero; carries what is needed to understand why."""

    def __init__(
        self,
        *,
        container: str,
        exit_code: int,
        oom_killed: bool,
        log_tail: Sequence[str],
        error: str = "",
        killed_by_daemon: str = "",
    ) -> None:
        self.container = container
        self.exit_code = exit_code
        self.oom_killed = oom_killed
        self.log_tail = list(log_tail)
        self.killed_by_daemon = killed_by_daemon  # how the Docker daemon's shutdown killed it, if it did
        reason = " (killed by the kernel: out of memory; raise resources.memory)" if oom_killed else ""
        if killed_by_daemon:
            reason = f", {killed_by_daemon}"
        detail = f"\nDocker error: {error}" if error else ""
        tail = "\n".join(self.log_tail) if self.log_tail else "<no output>"
        super().__init__(
            f"Container {container} exited with code {exit_code}{reason}.{detail}\n"
            f"Last {len(self.log_tail)} log lines:\n{tail}"
        )


class GpusUnavailable(DoodError):
    """The GPUs did not free up before the task's deadline (its execution_timeout)."""


class GpusBusy(DoodError):
    """Too few free GPUs now (or older waiters first) and the task waits elsewhere (deferrable): its ticket
    stays in the queue, `ticket` names it."""

    def __init__(self, message: str, *, ticket: str, wanted: int | str) -> None:
        super().__init__(message)
        self.ticket = ticket
        self.wanted = wanted
