"""DoodContainerSensor: wait for a container started with ``DoodContainerOperator(wait=False)``.

Such a container is handed off: once its start task succeeded, it belongs to the sensors waiting for it
(label ``dood.handoff``, `dood.handoff`), and the janitor keeps it while one of them has not finished
(poking, up for reschedule, up for retry) and its DAG run runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk.bases.sensor import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowSensorTimeout
from docker.errors import NotFound

from dood.config.model import AutoRemove, DoodConfig, load_config
from dood.exceptions import DoodConfigError, DoodError
from dood.hooks.dood import DoodHook
from dood.hosts import remote_view, task_placement
from dood.lifecycle.completion import ContainerHandle, finish, resume, resume_carry, resume_config, task_deadline
from dood.lifecycle.handoff import waiters
from dood.lifecycle.launch import ContainerLauncher
from dood.lifecycle.logs import task_log_emitter
from dood.lifecycle.outcome import STILL_GOING
from dood.naming import TaskIdentity
from dood.operators.arguments import exit_codes, one_of
from dood.triggers.container import DoodContainerTrigger, foreign_event

if TYPE_CHECKING:
    from airflow.sdk import Context


class DoodContainerSensor(BaseSensorOperator):
    """Wait for a dood container to end, then bring its logs and result like the operator does.

    Find it by ``container_id`` (e.g. ``"{{ ti.xcom_pull('start')['container_id'] }}"``), or by the labels of
    ``upstream_task_id`` in the same run (and map index). Works in ``poke`` and ``reschedule`` modes, and
    with ``deferrable=True`` waits in the triggerer. A non-zero exit fails the sensor (``skip_on_exit_code``
    skips it); the JSON result becomes its return value.

    With several Docker hosts, ``host`` names the one the container runs on: the sensor is queued to that
    host's workers, and from any other host it reaches that host's proxy over its network endpoint.
    """

    template_fields: Sequence[str] = ("container_id", "upstream_task_id")

    def __init__(
        self,
        *,
        container_id: str | None = None,
        upstream_task_id: str | None = None,
        skip_on_exit_code: int | Iterable[int] | None = None,
        auto_remove: AutoRemove | None = None,
        deferrable: bool = False,
        config_path: str | None = None,
        host: str | None = None,
        **kwargs: Any,
    ) -> None:
        if host is not None:  # its host's queue (no pool: a sensor launches nothing)
            what = str(kwargs.get("task_id"))
            placement = task_placement(
                host=host, hosts=None, host_labels=None, placement=None, config_path=config_path, what=what
            )
            if placement is not None:  # a host given: always one
                kwargs.setdefault("queue", placement.queue)
        super().__init__(**kwargs)
        self.host = host
        if bool(container_id) == bool(upstream_task_id):
            raise DoodConfigError(f"{self.task_id}: give exactly one of container_id or upstream_task_id")
        self.container_id = container_id
        self.upstream_task_id = upstream_task_id
        self.skip_on_exit_code = exit_codes(skip_on_exit_code, self.task_id)
        self.auto_remove = one_of(auto_remove, AutoRemove, "auto_remove", self.task_id)
        self.deferrable = deferrable
        self.config_path = config_path

    def _config(self) -> DoodConfig:
        """The config as this worker's host sees it, or, for a container on another host, as that host is
        reached from elsewhere (its network endpoint)."""
        config = load_config(self.config_path)
        return remote_view(config, self.host) if self.host and self.host != config.host else config

    def _locate(self, hook: DoodHook, config: DoodConfig, context: Context) -> tuple[ContainerHandle, dict]:
        """The container to wait for, and its inspect data; only containers we own qualify."""
        if self.container_id:
            try:
                found = hook.api.inspect_container(self.container_id)
            except NotFound:
                raise DoodError(f"{self.task_id}: container {self.container_id!r} does not exist (anymore)") from None
        else:
            ti = context["ti"]
            identity = TaskIdentity.from_context(context, stack=hook.stack, host=config.host)
            candidates = hook.find_containers(identity.task_labels(task_id=self.upstream_task_id))
            if not candidates:
                where = f" on host {config.host!r}" if config.host else ""
                raise DoodError(
                    f"{self.task_id}: no container of task {self.upstream_task_id!r} in run {ti.run_id!r}{where}; "
                    "did it run with wait=False (on this host), and was the container removed already?"
                )
            newest = max(candidates, key=lambda c: TaskIdentity.from_labels(c["Labels"]).try_number)
            found = hook.api.inspect_container(newest["Id"])
        if not hook.owns(found["Config"].get("Labels") or {}):
            where = f" on host {config.host!r}" if config.host else ""
            raise DoodError(
                f"{self.task_id}: container {found['Name']} is not managed by this dood stack ({hook.stack!r})"
                f"{where}; not touching it"
            )
        name = found["Name"].lstrip("/")
        self._check_handoff(name, found["Config"].get("Labels") or {})
        return ContainerHandle.of(found["Id"], name, config.runs_root, config.host), found["State"]

    def _check_handoff(self, name: str, labels: dict[str, str]) -> None:
        """Say so when the janitor would not count this sensor among the container's waiters (`dood.handoff`):
        it then keeps the container only while the sensors it names, or its run, still wait."""
        named = waiters(labels)
        if named is None:
            self.log.warning(
                "Container %s was not handed off (its task waits for it itself: wait=True, or a dood older than "
                "dood.handoff): the janitor removes it once its task instance has ended.",
                name,
            )
        elif named and self.task_id not in named:
            self.log.warning(
                "Container %s is handed off to %s, not to %s: the janitor removes it once those ended. Give this "
                "sensor upstream_task_id=, downstream of the task that started it, to be counted.",
                name,
                ", ".join(named),
                self.task_id,
            )

    def _finish(self, config: DoodConfig, launcher: ContainerLauncher, handle: ContainerHandle, outcome=None):
        return finish(
            launcher,
            handle,
            config,
            emit=task_log_emitter(self.log),
            follow=False,
            skip_on_exit_code=self.skip_on_exit_code,
            auto_remove=self.auto_remove,
            outcome=outcome,
        )

    def poke(self, context: Context) -> PokeReturnValue:
        config = self._config()
        hook = DoodHook(config)
        handle, state = self._locate(hook, config, context)
        if state["Status"] in STILL_GOING:
            self.log.info("Container %s is %s", handle.container_name, state["Status"])
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=self._finish(config, ContainerLauncher(hook.api), handle))

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        config = self._config()
        hook = DoodHook(config)
        handle, state = self._locate(hook, config, context)
        if state["Status"] not in STILL_GOING:
            return self._finish(config, ContainerLauncher(hook.api), handle)
        self._defer(config, handle, context, stack=hook.stack)

    def _defer(self, config: DoodConfig, handle: ContainerHandle, context: Context, *, stack: str) -> None:
        carry = resume_carry(  # the resume finishes with it when the config cannot be read then
            handle,
            config,
            auto_remove=self.auto_remove,
            stop_grace_seconds=config.defaults.stop_grace_period_seconds,
            stack=stack,
        )
        self.defer(
            # The sensor only watches: killing it leaves the container to its owner (and the janitor).
            trigger=DoodContainerTrigger.from_config(
                config,
                handle.container_id,
                deadline=task_deadline(context, self.timeout),
                stop_grace_seconds=None,
                resume=carry,
            ),
            method_name="execute_complete",
            kwargs={"handle": handle.to_xcom()},
        )

    def execute_complete(self, context: Context, event: dict[str, Any], handle: dict[str, str] | None = None) -> Any:
        """Finish after the trigger fired (logs, result, removal as auto_remove says), with the dood config,
        or, when it cannot be read (made invalid while the sensor waited), with what the trigger carried."""
        config, carried = resume_config(self._config, event, handle, self.log.warning)
        api = DoodHook(config, answered_before=True).api
        container = ContainerHandle.resumed(handle, event, api, config.runs_root, config.host)
        foreign = foreign_event(event, container.container_id)
        if foreign:  # an earlier trigger's event under this trigger's id: not this container's outcome
            self.log.warning("%s", foreign)
            if carried:  # the endpoint came with that other trigger's event: nothing to wait again with
                raise DoodConfigError(f"{foreign} The dood config cannot be read to wait again: fix it, clear.")
            self._defer(config, container, context, stack=DoodHook(config).stack)
        if event.get("status") == "timeout":
            raise AirflowSensorTimeout(f"{self.task_id}: {container.container_name} still running at the timeout")
        return self._finish(config, ContainerLauncher(api), container, resume(event, container.container_name))
