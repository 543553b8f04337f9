"""The life of one launched container: image, create (never a 409), start, logs, wait, stop, remove.

Operator, sensor and trigger all go through here, so "wait for a container and read its outcome" is
written once. Everything takes container ids or names, never in-memory state, so another process
(a retry, the triggerer, the janitor) can pick up where one left off.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from docker.errors import APIError, ImageNotFound, NotFound
from docker.types import Mount
from docker.utils import parse_repository_tag

from dood.exceptions import DoodConfigError, DoodError, ForeignContainerError, ImageUnavailable
from dood.gpus.holdings import asked as asked_gpus
from dood.lifecycle.gone import ContainerGone, last_exit_code
from dood.lifecycle.handoff import handoff_label
from dood.lifecycle.logs import LineForwarder
from dood.lifecycle.outcome import NOT_RUNNING, Outcome
from dood.lifecycle.teardown import remove_container, stop_container
from dood.naming import MANAGED_LABEL, TaskIdentity

if TYPE_CHECKING:
    from docker import APIClient

    from dood.config.model import PullPolicy
    from dood.config.resources import Resources
    from dood.gpus.claims import GpuClaims

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to create one container; sources of `mounts` are already host paths."""

    identity: TaskIdentity
    image: str
    command: Sequence[str] | str | None = None
    entrypoint: Sequence[str] | str | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    mounts: Sequence[Mount] = ()
    working_dir: str | None = None
    user: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    resources: Resources | None = None
    network: str | None = None
    #: Docker's init (tini) as PID 1: SIGTERM reaches the program, which a program as PID 1 (python) ignores
    #: unless it installs a handler, making every stop wait the whole grace period. None: Docker's default.
    init: bool | None = None
    #: Started with wait=False: the task ids of the sensors that wait for it (empty: the run waits);
    #: None when its own task waits. Recorded in the label `dood.handoff` (`dood.handoff`).
    handed_off_to: Sequence[str] | None = None

    @property
    def name(self) -> str:
        return self.identity.container_name()

    def all_labels(self) -> dict[str, str]:
        handoff = handoff_label(self.handed_off_to) if self.handed_off_to is not None else {}
        return {**self.labels, **handoff, **self.identity.labels()}


class ContainerLauncher:
    """Drives one Docker API client through a container's life."""

    def __init__(self, api: APIClient) -> None:
        self.api = api

    def ensure_image(self, image: str, policy: PullPolicy) -> None:
        """Pull according to the policy. A missing image that `never` forbids pulling, or whose pull fails, is a
        DoodConfigError naming the image and the fix (`ImageUnavailable`), before anything is created."""
        if policy != "always":
            try:
                self.api.inspect_image(image)
                return
            except ImageNotFound:
                if policy == "never":
                    raise DoodConfigError(
                        f"image: {image!r} is not present on the Docker host and pull_policy is 'never'. "
                        "Build or load it there, or use pull_policy 'if_not_present'."
                    ) from None
        repository, tag = parse_repository_tag(image)
        log.info("Pulling image %s", image)
        try:  # the daemon refuses at once (500: no such registry host; 404: no such repository) or mid-stream
            for event in self.api.pull(repository, tag=tag or "latest", stream=True, decode=True):
                if "error" in event:
                    raise ImageUnavailable(image=image, reason=str(event["error"]), pull_policy=policy)
        except APIError as exc:
            reason = str(exc.explanation or exc)
            raise ImageUnavailable(image=image, reason=reason, pull_policy=policy) from None

    def create(
        self, spec: ContainerSpec, body: Mapping[str, Any] | None = None, *, gpus: GpuClaims | None = None
    ) -> str:
        """Create the container from `body` (default: `create_body(spec)`), so what a caller checked is
        exactly what is sent; a leftover of this same try is removed first, anything else is refused.
        A body asking for GPUs goes through `gpus` (`dood.gpus.claims`): its count becomes free DeviceIDs."""
        body = body if body is not None else self.create_body(spec)
        if gpus is not None:
            return gpus.create(body, lambda claimed: self._create_named(spec, claimed))
        if asked_gpus(body) is not None:
            raise DoodConfigError(
                f"{spec.name}: a GPU count would give GPUs 0…N-1 whoever holds them; create it with "
                "gpus=GpuClaims(...) (dood.gpus.claims), which names free GPUs"
            )
        return self._create_named(spec, body)

    def _create_named(self, spec: ContainerSpec, body: Mapping[str, Any]) -> str:
        for attempt in (1, 2):
            try:
                return self.api.create_container_from_config(dict(body), name=spec.name)["Id"]
            except APIError as exc:
                if exc.status_code != 409 or attempt == 2:
                    raise
            self._clear_leftover(spec)
        raise AssertionError("unreachable")

    def create_body(self, spec: ContainerSpec) -> dict[str, Any]:
        """The `POST /containers/create` body of this spec, exactly as `create` sends it (for the policy)."""
        host_config = self.api.create_host_config(
            mounts=list(spec.mounts),
            network_mode=spec.network,
            auto_remove=False,  # we remove it ourselves, after reading its outcome
            security_opt=["no-new-privileges"],  # no setuid binary lifts it above its non-root user
            init=spec.init,
            **(spec.resources.host_config_kwargs() if spec.resources else {}),
        )
        return self.api.create_container_config(
            image=spec.image,
            command=list(spec.command) if spec.command is not None else None,  # type: ignore[arg-type] # None: CMD
            entrypoint=list(spec.entrypoint) if spec.entrypoint is not None else None,
            environment=dict(spec.environment),
            working_dir=spec.working_dir,
            user=spec.user,
            labels=spec.all_labels(),
            host_config=host_config,
        )

    def _clear_leftover(self, spec: ContainerSpec) -> None:
        try:
            existing = self.api.inspect_container(spec.name)
        except NotFound:
            return  # removed meanwhile: just create again
        labels = existing["Config"].get("Labels") or {}
        if labels.get(MANAGED_LABEL) != "true":
            raise ForeignContainerError(spec.name, existing["Id"], f"does not carry the label {MANAGED_LABEL}=true")
        expected = spec.identity.labels()
        mismatched = {k: labels.get(k) for k, v in expected.items() if labels.get(k) != v}
        if mismatched:
            raise ForeignContainerError(spec.name, existing["Id"], f"belongs to another task ({mismatched})")
        status = existing["State"]["Status"]
        if status not in NOT_RUNNING:
            raise DoodError(
                f"Container {spec.name} of this very task try is already {status}; refusing to start a second "
                "one. Stop it (or wait for it) and clear the task again."
            )
        log.info("Removing leftover container %s (ours, %s) from an earlier attempt", spec.name, status)
        self.remove(existing["Id"])

    def start(self, container_id: str) -> None:
        self.api.start(container_id)

    def attach_output(self, container_id: str) -> Iterator[tuple[bytes | None, bytes | None]]:
        """The container's live stdout/stderr. Open it *before* start(): then not a byte is missed. Never for
        one already running: an attach that dockerd 20.10 registers as the container exits never ends.

        Its frames carry the container's writes as they come (up to 32 KiB each), where logs(follow=True)
        sends one frame per line (~10x slower to read) and, on Docker 20.10, can end early, silently, when
        the container exits while the reader is behind. Docker still keeps its own log (`docker logs`).
        """
        return self.api.attach(container_id, stdout=True, stderr=True, stream=True, logs=False, demux=True)

    def forward_output(
        self,
        output: Iterator[tuple[bytes | None, bytes | None]],
        emit: Callable[[str], None],
        *,
        lines_per_record: int = 1,
        tail: deque[str] | None = None,
    ) -> LineForwarder:
        """Emit each line of an attach_output() stream until the container ends (or the daemon goes); returns
        the tail (`tail`: one kept across several streams of the same container)."""
        try:
            return LineForwarder(emit, lines_per_record=lines_per_record, tail=tail).consume_demuxed(output)
        finally:
            output.close()  # type: ignore[attr-defined] # docker's stream (a generator) has one

    def forward_logs(
        self,
        container_id: str,
        emit: Callable[[str], None],
        *,
        follow: bool = True,
        lines_per_record: int = 1,
        since: float | None = None,
        tail: deque[str] | None = None,
    ) -> LineForwarder:
        """Emit each output line (following until the container ends, or what exists now; from `since`, epoch
        seconds, when given); returns the tail (`tail`: one kept across several streams)."""
        stream = self.api.logs(container_id, stream=True, follow=follow, stdout=True, stderr=True, since=since or None)
        try:
            return LineForwarder(emit, lines_per_record=lines_per_record, tail=tail).consume(stream)
        finally:
            stream.close()

    def wait(self, container_id: str, *, name: str | None = None) -> Outcome:
        """Block until the container ended, then read how; one removed meanwhile (`docker rm -f`: gone, or
        still "removing") raises ContainerGone with its exit code, not a raw 404 nor a plain 137."""
        try:
            result = self.api.wait(container_id)
            state = self.api.inspect_container(container_id)["State"]
            if state.get("Status") == "removing":
                raise ContainerGone(name or container_id[:12], result.get("StatusCode"))
            return Outcome.from_state(state, result)
        except NotFound:
            raise ContainerGone(name or container_id[:12], last_exit_code(self.api, container_id)) from None

    def outcome(self, container_id: str, wait_result: Mapping[str, Any] | None = None) -> Outcome:
        """Exit code, OOM flag and Docker's error message of an ended container."""
        return Outcome.from_state(self.api.inspect_container(container_id)["State"], wait_result)

    def stop(self, container_id: str, grace_seconds: int) -> None:
        """SIGTERM, then SIGKILL after the grace period; a container already gone is fine."""
        stop_container(self.api, container_id, grace_seconds)

    def remove(self, container_id: str) -> None:
        """Force-remove (SIGKILL if it still runs: stop() first for a graceful end); gone is fine."""
        remove_container(self.api, container_id)
