"""DoodContainerOperator: run one step as a sibling container on the Docker host, safely."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR, TriggerFailureReason
from airflow.sdk.exceptions import AirflowSkipException, AirflowTaskTimeout
from docker.errors import NotFound
from docker.types import Mount

from dood.config.model import AutoRemove, DoodConfig, PullPolicy, load_config
from dood.config.placement import Placement
from dood.config.resources import Resources
from dood.engine.reconnect import Reconnector
from dood.exceptions import ContainerFailed, DoodConfigError, ResultFileError
from dood.gpus.claims import GpusBusy, claims_for
from dood.hooks.dood import DoodHook
from dood.hosts import apply_placement, check_delivered, check_proxy_host, remote_view, task_placement
from dood.lifecycle.adoption import adoptable, adoptable_elsewhere, first_try
from dood.lifecycle.checkpoint import CHECKPOINT_XCOM_KEY, TaskCheckpoint
from dood.lifecycle.completion import ContainerHandle, finish, resume, resume_carry, resume_config, task_deadline
from dood.lifecycle.gone import ContainerGone
from dood.lifecycle.handoff import waiters_of
from dood.lifecycle.launch import ContainerLauncher, ContainerSpec
from dood.lifecycle.logs import task_log_emitter
from dood.lifecycle.outcome import ENDING_KEY
from dood.lifecycle.owning_try import end_if_owner
from dood.lifecycle.results import RUN_DIR_IN_CONTAINER, result_env, run_dir_for
from dood.mounts.mount_map import DoodMount, check_bind_sources, host_mounts
from dood.mounts.run_directories import HostDirectories, default_user
from dood.naming import TaskIdentity, check_user_labels, run_env
from dood.operators.arguments import exit_codes, one_of, validated_resources
from dood.operators.gpu_waiting import WaitsForGpus
from dood.policy import apply_defaults
from dood.policy import check as check_policy
from dood.triggers.container import DoodContainerTrigger, foreign_event
from dood.ui.extra_link import DoodContainerLink

if TYPE_CHECKING:
    from airflow.sdk import Context

    from dood.config.endpoints import DockerEndpoint
    from dood.lifecycle.outcome import Outcome
    from dood.mounts.checkpoints import CheckpointKey


class DoodContainerOperator(WaitsForGpus, BaseOperator):
    """Launch a container next to Airflow's through the host socket, stream its logs, return its result.

    Mount sources are given as Airflow sees them and translated through the shared mount map. The
    container's name and labels derive from the task instance try, so retries and backfills never
    collide. JSON written to ``$DOOD_RESULT_FILE`` becomes the return value (XCom).

    :param image: image to run.
    :param command: command (list or string); templated.
    :param entrypoint: override of the image's entrypoint.
    :param environment: environment variables; templated and shown in the rendered view.
    :param private_environment: environment variables never rendered nor logged (secrets).
    :param mounts: ``DoodMount``, dicts or ``"source:target[:ro]"`` strings; sources are Airflow-side paths.
    :param working_dir: working directory inside the container.
    :param user: numeric ``uid[:gid]`` the container runs as; defaults to the config's ``defaults.user``,
        else the Airflow process's own (``50000:0`` when that is root). Root needs ``policy.allow_root_user``.
    :param resources: ``Resources`` or dict (cpus, memory, shm_size, gpus); unset fields use config defaults.
    :param network: Docker network to join; defaults to the config's ``defaults.network``.
    :param labels: extra labels (the ``dood.`` prefix is reserved).
    :param pull_policy: ``if_not_present``, ``always`` or ``never``; defaults to config.
    :param skip_on_exit_code: exit code(s) that mark the task skipped instead of failed.
    :param auto_remove: ``always``, ``on_success`` or ``never``; defaults to config.
    :param stop_grace_period: seconds (or timedelta) between SIGTERM and SIGKILL on kill/timeout.
    :param init: run Docker's init as PID 1 so SIGTERM reaches the program; defaults to the config's
        ``defaults.init`` (true).
    :param config_path: dood config file; defaults to ``$DOOD_CONFIG`` or the project's ``config/dood.yaml``.
    :param deferrable: start the container, then wait in the triggerer (no worker slot held).
    :param wait: False starts the container and returns its handle at once (wait with DoodContainerSensor).
    :param reattach: adopt a still-running container of an earlier try of this task instance instead of
        starting a second one; a worker's graceful shutdown then leaves the container running.
    :param host: run on this Docker host (a name under the config's ``hosts:``): sets the task's Celery
        ``queue`` and its host's ``pool``; a worker on another host refuses it before creating anything.
    :param hosts: run on any of these hosts (their shared queue), instead of ``host``.
    :param host_labels: run on any host carrying all these labels, e.g. ``{"gpu": "a100"}``.
    :param placement: an already resolved ``dood.config.placement.Placement`` (the DAG factory's), instead of the above.
    :param checkpoint: mount a directory of this task instance (the same for every try, on every host) at
        ``$DOOD_CHECKPOINT_DIR``; kept when a try fails, removed when the task succeeds (``dood.mounts.checkpoints``).
    :param checkpoint_retention: keep the task's N newest finished checkpoints instead (0: remove).
    :param checkpoint_root: Airflow-side directory holding checkpoints, named ``dood-checkpoints`` (default
        ``<runs_root>/dood-checkpoints``); on storage every host mounts when the step may run on several.
    """

    template_fields: Sequence[str] = (
        "image",
        "command",
        "entrypoint",
        "environment",
        "mounts",
        "working_dir",
        "user",
        "labels",
    )
    template_fields_renderers = {"environment": "json", "command": "py", "mounts": "py"}
    ui_color = "#d6eaf8"
    operator_extra_links = (DoodContainerLink(),)  # the task instance's "Container" tab (dood.ui)

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        """A mapped step (`.partial(host=...).expand(...)`) is routed by its partial arguments, before any
        `__init__` runs: give them the placement's queue and pool too."""
        what = str(kwargs.get("task_id"))
        placement = task_placement(
            host=kwargs.get("host"),
            hosts=kwargs.get("hosts"),
            host_labels=kwargs.get("host_labels"),
            placement=kwargs.get("placement"),
            config_path=kwargs.get("config_path"),
            what=what,
        )
        apply_placement(placement, kwargs, what)
        return super().partial(**kwargs)

    def __init__(
        self,
        *,
        image: str,
        command: Sequence[str] | str | None = None,
        entrypoint: Sequence[str] | str | None = None,
        environment: Mapping[str, str] | None = None,
        private_environment: Mapping[str, str] | None = None,
        mounts: Sequence[DoodMount | Mapping | str] | None = None,
        working_dir: str | None = None,
        user: str | None = None,
        resources: Resources | Mapping[str, Any] | None = None,
        network: str | None = None,
        labels: Mapping[str, str] | None = None,
        pull_policy: PullPolicy | None = None,
        skip_on_exit_code: int | Iterable[int] | None = None,
        auto_remove: AutoRemove | None = None,
        stop_grace_period: int | timedelta | None = None,
        init: bool | None = None,
        config_path: str | None = None,
        deferrable: bool = False,
        wait: bool = True,
        reattach: bool = True,
        host: str | None = None,
        hosts: Sequence[str] | None = None,
        host_labels: Mapping[str, str] | None = None,
        placement: Placement | None = None,
        checkpoint: bool = False,
        checkpoint_retention: int | None = None,
        checkpoint_root: str | None = None,
        **kwargs: Any,
    ) -> None:
        what = str(kwargs.get("task_id"))
        placement = task_placement(
            host=host, hosts=hosts, host_labels=host_labels, placement=placement, config_path=config_path, what=what
        )
        apply_placement(placement, kwargs, what)  # its queue and pool
        super().__init__(**kwargs)
        self.placement = placement
        if not image:
            raise DoodConfigError(f"{self.task_id}: image must be a non-empty image reference")
        self.image = image
        self.command = command
        self.entrypoint = entrypoint
        self.environment = dict(environment or {})
        self.private_environment = dict(private_environment or {})
        self.mounts = list(mounts or [])
        self.working_dir = working_dir
        self.user = user
        self.container_resources = validated_resources(resources, self.task_id)
        self.network = network
        self.labels = check_user_labels(dict(labels or {}), f"{self.task_id}: labels")
        self.pull_policy = one_of(pull_policy, PullPolicy, "pull_policy", self.task_id)
        self.auto_remove = one_of(auto_remove, AutoRemove, "auto_remove", self.task_id)
        self.skip_on_exit_code = exit_codes(skip_on_exit_code, self.task_id)
        if isinstance(stop_grace_period, timedelta):
            stop_grace_period = int(stop_grace_period.total_seconds())
        if stop_grace_period is not None and stop_grace_period < 0:
            raise DoodConfigError(f"{self.task_id}: stop_grace_period must be 0 or more seconds")
        self.stop_grace_period = stop_grace_period
        self.init = init
        self.config_path = config_path
        if deferrable and not wait:
            raise DoodConfigError(f"{self.task_id}: deferrable=True needs wait=True (use DoodContainerSensor)")
        self.deferrable = deferrable
        self.wait = wait
        self.reattach = reattach
        self.checkpoint = TaskCheckpoint.of(
            checkpoint,
            retention=checkpoint_retention,
            root=checkpoint_root,
            placement=placement,
            task_id=what,
            wait=wait,
        )
        self._launcher: ContainerLauncher | None = None
        self._container_id: str | None = None
        self._identity: TaskIdentity | None = None
        self._grace_seconds = stop_grace_period or 0

    # --- building the spec: every check happens here, before anything exists on the host ---

    def build_spec(self, config: DoodConfig, hook: DoodHook, identity: TaskIdentity, context: Context):
        """Validate and translate everything; returns (spec, run_dir). Creates nothing on the host."""
        mount_map = hook.mount_map
        mounts = host_mounts(self.mounts, mount_map, self.task_id, reserved=RUN_DIR_IN_CONTAINER)
        run_dir = run_dir_for(config.runs_root, identity.container_name())
        run_dir_host = mount_map.to_host(run_dir, "runs_root (dood config)")
        mounts.append(Mount(target=RUN_DIR_IN_CONTAINER, source=run_dir_host, type="bind"))
        environment = {str(k): str(v) for k, v in self.environment.items()}
        environment.update({str(k): str(v) for k, v in self.private_environment.items()})
        environment.update(run_env(identity, context))
        environment.update(result_env())
        if self.checkpoint is not None and self._checkpoint_key is not None:  # every try's, the same directory
            environment.update(self.checkpoint.mount(config, mount_map, self._checkpoint_key, mounts))
        spec = ContainerSpec(
            identity=identity,
            image=self.image,
            command=self.command,
            entrypoint=self.entrypoint,
            environment=environment,
            mounts=mounts,
            working_dir=self.working_dir,
            user=self.user or config.defaults.user or default_user(),
            labels={**config.defaults.labels, **check_user_labels(self.labels, f"{self.task_id}: labels")},
            resources=self.container_resources.merged_over(config.defaults.resources),
            network=self.network or config.defaults.network,
            init=config.defaults.init if self.init is None else self.init,
            handed_off_to=None if self.wait else waiters_of(self),  # dood.handoff: the janitor spares it
        )
        for mount in mounts:  # what the mount map made of each source: the rendered view shows only the input
            access = "ro" if mount.get("ReadOnly") else "rw"
            self.log.info("Mount %s <- host %s (%s, %s)", mount["Target"], mount["Source"], mount["Type"], access)
        return spec, run_dir

    def prepare_directories(self, directories: HostDirectories, user: str) -> None:
        """Make the directories this task's mounts need before its container is created (none here)."""

    # --- running ---

    def execute(self, context: Context) -> Any:
        config = load_config(self.config_path)
        check_delivered(self.placement, config, self.task_id)  # on the host it is placed on, or nothing happens
        self._grace_seconds = self._grace(config)
        hook = DoodHook(config)
        check_proxy_host(hook.api, config, self.task_id)  # its own host's proxy, not another's
        identity = self._identity = TaskIdentity.from_context(context, stack=hook.stack, host=config.host)
        self._checkpoint_key = TaskCheckpoint.key(context, identity, self.retries) if self.checkpoint else None
        launcher = self._launcher = ContainerLauncher(hook.api)
        cleared = {  # tries before the last clear: never adopted, ended (dood.lifecycle.adoption)
            "since_try": first_try(context, self.retries),
            "grace_seconds": self._grace_seconds,
            "keep_exited": (self.auto_remove or config.defaults.auto_remove) == "never",
        }
        handle = adoptable(hook, identity, config, self.log, **cleared) if self.reattach else None
        elsewhere: tuple[ContainerHandle, DoodConfig] | None = None
        if self.reattach and handle is None:  # a shared queue's retry may follow a container on another host
            elsewhere = adoptable_elsewhere(config, identity, self.placement, self.log, **cleared)
        if elsewhere is not None:
            handle, config = elsewhere
            self._docker = config.docker  # a kill or timeout reaches it there too
            launcher = self._launcher = ContainerLauncher(DoodHook(config, answered_before=True).api)
        if handle is not None:
            self._adopted(config, identity, context)
        output = None  # a new container's live output stream, attached before its start so nothing is missed
        # An adopted container's output comes from its followed logs (history first), never from an attach:
        # dockerd 20.10 can leave an attach opened while the container exits hanging forever (seen here).
        if handle is None:
            spec, run_dir = self.build_spec(config, hook, identity, context)
            body = apply_defaults(launcher.create_body(spec), config.policy)  # as dood-proxy would
            check_policy(body, config.policy, subject=f"{self.task_id}: the container")
            if spec.resources and spec.resources.cpus is not None:  # Docker's own 400 would say less
                spec.resources.check_host(hook.host_cpus, f"{self.task_id}: resources")
            launcher.ensure_image(spec.image, self.pull_policy or config.defaults.pull_policy)
            self.prepare_directories(hook.directories, spec.user)
            check_bind_sources(self.mounts, hook.mount_map, self.task_id)  # what dood did not just make
            hook.directories.for_container(
                run_dir, spec.user, fresh=True, what=f"{self.task_id}: runs_root (dood config)"
            )
            if self.checkpoint is not None and self._checkpoint_key is not None:
                host_path = self.checkpoint.prepare(
                    hook.directories, config, self._checkpoint_key, spec.user, self.log.info
                )
                # the Container tab names a kept checkpoint after its container is gone (dood.ui.checkpoint)
                context["ti"].xcom_push(key=CHECKPOINT_XCOM_KEY, value={"host_path": host_path})
            hook.directories.check_binds(body["HostConfig"], f"{self.task_id}: the container")
            self.log.info("Creating container %s from %s", spec.name, spec.image)
            deadline = self._gpu_deadline or task_deadline(context, self.execution_timeout)
            # a GPU count becomes free GPUs, named (dood.gpus.claims); waits its turn while too few are free
            gpus = claims_for(
                hook.api,
                config,
                body,
                image=spec.image,
                user=spec.user,
                emit=self.log.info,
                deadline=deadline,
                ticket=self._gpu_ticket,
                wait=not self.deferrable,
            )
            try:
                container_id = launcher.create(spec, body, gpus=gpus)  # exactly the body the policy passed
            except GpusBusy as busy:  # deferrable: wait for the GPUs in the triggerer, holding no worker slot
                self._defer_for_gpus(busy, config, body, spec, deadline)
            handle = ContainerHandle(container_id, spec.name, run_dir, config.host)
            self._container_id = container_id
            try:
                if self.wait and not self.deferrable:
                    output = launcher.attach_output(container_id)
                launcher.start(container_id)
            except BaseException:
                launcher.remove(container_id)
                raise
        self._container_id = handle.container_id
        if not self.wait:
            self.log.info("Container %s started; not waiting (wait=False). Handle: %s", handle.container_name, handle)
            self._container_id = None  # from now on it belongs to whoever waits for it
            return handle.to_xcom()
        if self.deferrable:
            self._defer(handle, config, context)
        return self._finish(handle, config, follow=output is None, output=output)

    def _adopted(self, config: DoodConfig, identity: TaskIdentity, context: Context) -> None:
        """An earlier try's container was adopted instead of building a new one (`build_spec` not called): a
        hook for what a new container's build would have done for this try (`TracksInMlflow`: its XCom)."""

    def _finish(
        self,
        handle: ContainerHandle,
        config: DoodConfig,
        *,
        follow: bool,
        outcome: Outcome | None = None,
        output: Iterator[tuple[bytes | None, bytes | None]] | None = None,
    ):
        assert self._launcher is not None  # noqa: S101 - narrowing: set by execute before this is reached
        try:
            value = finish(
                self._launcher,
                handle,
                config,
                emit=task_log_emitter(self.log),
                follow=follow,
                skip_on_exit_code=self.skip_on_exit_code,
                auto_remove=self.auto_remove,
                outcome=outcome,
                output=output,
                owner=self._identity,
            )
            self._checkpoint_after(config, succeeded=True)
            return value
        except BaseException as exc:
            self._checkpoint_after(config, succeeded=False)
            container_id, self._container_id = self._container_id, None
            if self._killed_on_request:
                # on_kill ran (mark failed, clear) and ends the container: its exit, or its absence, seen
                # here meanwhile is no failure of the step. SystemExit is logged as one line, no traceback.
                raise SystemExit(f"Task killed: container {handle.container_name} is stopped and removed.") from None
            ended = isinstance(exc, (ContainerFailed, ContainerGone, AirflowSkipException, ResultFileError))
            if container_id and not ended:
                # A timeout, a Docker error, any failure while it may still run: never leave it running.
                self._end_container(container_id, type(exc).__name__, leave_if_running=False)
            raise
        finally:
            self._container_id = None

    def _defer(self, handle: ContainerHandle, config: DoodConfig, context: Context) -> None:
        deadline = self._gpu_deadline or task_deadline(context, self.execution_timeout)
        self._container_id = None  # the trigger owns it now; its on_kill stops it on a user kill
        carry = resume_carry(  # the resume finishes with it when the config cannot be read then
            handle,
            config,
            auto_remove=self.auto_remove,
            stop_grace_seconds=self._grace_seconds,
            stack=self._identity.stack if self._identity else config.stack,
        )
        self.defer(
            trigger=DoodContainerTrigger.from_config(
                config, handle.container_id, deadline=deadline, stop_grace_seconds=self._grace_seconds, resume=carry
            ),
            method_name="execute_complete",
            kwargs={"handle": handle.to_xcom()},
        )

    def execute_complete(self, context: Context, event: dict[str, Any], handle: dict[str, str] | None = None) -> Any:
        """Resume after the trigger fired: show the logs (none were shown yet), then conclude. On the container's
        own host: a placement on several hosts (a shared queue) may resume on another of them."""
        config, carried = resume_config(lambda: load_config(self.config_path), event, handle, self.log.warning)
        if carried:
            self._docker = config.docker  # the container's host's, as handed to the trigger
        launched_on = None if carried else (handle or {}).get("host")
        if launched_on and launched_on != config.host:
            self.log.info(
                "Container launched on host %s; this worker is on %s: reaching it there", launched_on, config.host
            )
            config = remote_view(config, launched_on)
            self._docker = config.docker  # a kill or timeout then stops it there too
        self._grace_seconds = self._grace(config)
        hook = DoodHook(config, answered_before=True)  # it ran the container: not reaching it means a restart
        reconnect = Reconnector(config.docker.url, config.docker.unreachable_timeout_seconds)
        api = reconnect.call(lambda: hook.api)
        container = reconnect.call(lambda: ContainerHandle.resumed(handle, event, api, config.runs_root, config.host))
        self._launcher = ContainerLauncher(api)
        self._identity = TaskIdentity.from_context(context, stack=hook.stack, host=config.host)
        self._checkpoint_key = TaskCheckpoint.key(context, self._identity, self.retries) if self.checkpoint else None
        self._container_id = container.container_id
        foreign = foreign_event(event, container.container_id)
        if foreign:  # an earlier trigger's event under this trigger's id: not this container's outcome
            self.log.warning("%s", foreign)
            if carried:  # the endpoint came with that other trigger's event: nothing to wait again with
                raise DoodConfigError(f"{foreign} The dood config cannot be read to wait again: fix it, clear.")
            self._defer(container, config, context)
        if event.get("status") == "timeout":
            self._container_id = None
            if event.get(ENDING_KEY):  # the trigger began it at the deadline: one stop, one SIGTERM
                self.log.error("execution_timeout passed while deferred: %s.", event[ENDING_KEY])
            else:
                self.log.error("execution_timeout passed while deferred: stopping %s", container.container_name)
                self._end_container(container.container_id, "execution_timeout", leave_if_running=False)
            raise AirflowTaskTimeout(f"Container {container.container_name} outlived execution_timeout")
        return self._finish(container, config, follow=False, outcome=resume(event, container.container_name))

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Airflow's own deadline check (the scheduler's, same deadline as the trigger's) can time the deferral
        out before the triggerer ran the trigger (a slow worker deferred past its deadline): then nothing
        ended the container, so this try ends it before Airflow fails it (TaskDeferralTimeout)."""
        if (
            next_method == TRIGGER_FAIL_REPR
            and (next_kwargs or {}).get("error") == TriggerFailureReason.TRIGGER_TIMEOUT
        ):
            self._end_timed_out(context)
        return super().resume_execution(next_method, next_kwargs, context)

    def _end_timed_out(self, context: Context) -> None:
        """Stop, then remove, this try's container (found by its name) when it still exists; best effort:
        the janitor ends whatever this leaves."""
        try:
            config = load_config(self.config_path)
            hook = DoodHook(config, answered_before=True)
            self._identity = TaskIdentity.from_context(context, stack=hook.stack, host=config.host)
            name = self._identity.container_name()
            try:
                container_id = hook.api.inspect_container(name)["Id"]
            except NotFound:
                return  # never created, or already ended by the trigger
            self._grace_seconds = self._grace(config)
            self.log.error("execution_timeout passed before the trigger fired: stopping %s", name)
            self._end_container(container_id, "execution_timeout", leave_if_running=False)
        except Exception as exc:  # noqa: BLE001 - the timeout is what the task reports; the janitor backs this
            self.log.warning("Could not end this try's container after its deferral timed out: %s", exc)

    def _grace(self, config: DoodConfig) -> int:
        if self.stop_grace_period is not None:
            return self.stop_grace_period
        return config.defaults.stop_grace_period_seconds

    _checkpoint_key: CheckpointKey | None = (
        None  # this instance's checkpoint (dood.mounts.checkpoints), with checkpoint=True
    )

    def _checkpoint_after(self, config: DoodConfig, *, succeeded: bool) -> None:
        """Say what the try left in its checkpoint; the task succeeded: remove it (or keep the newest)."""
        if self.checkpoint is None or self._checkpoint_key is None:
            return
        try:
            directories = DoodHook(config, answered_before=True).directories
        except Exception as exc:  # noqa: BLE001 - the task's outcome is the container's
            self.log.warning("Checkpoint: could not reach Docker to finish it (%s)", exc)
            return
        self.checkpoint.after(directories, config, self._checkpoint_key, succeeded=succeeded, emit=self.log.info)

    _killed_on_request = False  # set by on_kill once it ends the container (the main thread then ends quietly)
    _docker: DockerEndpoint | None = None  # the container's host's endpoint, when a resume reached it from another

    def on_kill(self) -> None:
        """Mark failed, clear: stop the container (grace period), then remove it.

        A worker's graceful shutdown sends the same SIGTERM; with reattach on, the container is left
        running when Airflow still considers this try running, so the next try adopts it. (A timeout is
        handled before this is called, in `_finish`.)
        """
        container_id = self._container_id
        if not (self._launcher and container_id):
            return
        if self._end_container(container_id, "Task killed", leave_if_running=self.reattach):
            self._container_id = None
            self._killed_on_request = True

    def _end_container(self, container_id: str, reason: str, *, leave_if_running: bool) -> bool:
        """Stop, then remove, in a process that outlives this runner, unless this try may no longer own it
        (`dood.lifecycle.owning_try.end_if_owner`); True when it was ended."""
        return end_if_owner(
            self._identity,
            lambda: self._docker or load_config(self.config_path).docker,  # the container's host's
            container_id,
            self._grace_seconds,
            reason,
            leave_if_running=leave_if_running,
            log=self.log,
        )
