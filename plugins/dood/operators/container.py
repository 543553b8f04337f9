"""DoodContainerOperator: run one step as a sibling container on the Docker host, safely."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, get_args

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowSkipException
from docker.types import Mount
from pydantic import ValidationError

from dood.config import AutoRemove, DoodConfig, PullPolicy, load_config
from dood.exceptions import ContainerFailed, DoodConfigError
from dood.hooks.dood import DoodHook
from dood.launcher import ContainerLauncher, ContainerSpec, Outcome
from dood.mounts import DoodMount
from dood.naming import TaskIdentity, check_user_labels
from dood.resources import Resources
from dood.results import RUN_DIR_IN_CONTAINER, prepare_run_dir, read_result, result_env

if TYPE_CHECKING:
    from airflow.sdk import Context


class DoodContainerOperator(BaseOperator):
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
    :param user: user (``uid[:gid]`` or name) the container runs as.
    :param resources: ``Resources`` or dict (cpus, memory, shm_size, gpus); unset fields use config defaults.
    :param network: Docker network to join; defaults to the config's ``defaults.network``.
    :param labels: extra labels (the ``dood.`` prefix is reserved).
    :param pull_policy: ``if_not_present``, ``always`` or ``never``; defaults to config.
    :param skip_on_exit_code: exit code(s) that mark the task skipped instead of failed.
    :param auto_remove: ``always``, ``on_success`` or ``never``; defaults to config.
    :param stop_grace_period: seconds (or timedelta) between SIGTERM and SIGKILL on kill/timeout.
    :param config_path: dood config file; defaults to ``$DOOD_CONFIG`` or the project's ``config/dood.yaml``.
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
        config_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
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
        self.container_resources = _validated_resources(resources, self.task_id)
        self.network = network
        self.labels = check_user_labels(dict(labels or {}), f"{self.task_id}: labels")
        self.pull_policy = _one_of(pull_policy, PullPolicy, "pull_policy", self.task_id)
        self.auto_remove = _one_of(auto_remove, AutoRemove, "auto_remove", self.task_id)
        self.skip_on_exit_code = _exit_codes(skip_on_exit_code, self.task_id)
        if isinstance(stop_grace_period, timedelta):
            stop_grace_period = int(stop_grace_period.total_seconds())
        if stop_grace_period is not None and stop_grace_period < 0:
            raise DoodConfigError(f"{self.task_id}: stop_grace_period must be 0 or more seconds")
        self.stop_grace_period = stop_grace_period
        self.config_path = config_path
        self._launcher: ContainerLauncher | None = None
        self._container_id: str | None = None
        self._grace_seconds = stop_grace_period or 0

    # --- building the spec: every check happens here, before anything exists on the host ---

    def build_spec(self, config: DoodConfig, hook: DoodHook, identity: TaskIdentity, context: Context):
        """Validate and translate everything; returns (spec, run_dir). Creates nothing on the host."""
        mount_map = hook.mount_map
        mounts = []
        for index, raw in enumerate(self.mounts):
            mount = DoodMount.parse(raw, f"{self.task_id}: mounts[{index}]")
            if mount.target == RUN_DIR_IN_CONTAINER:
                raise DoodConfigError(f"{self.task_id}: mounts[{index}]: {RUN_DIR_IN_CONTAINER} is reserved")
            source = mount.source
            if mount.type == "bind":
                source = mount_map.to_host(mount.source, f"{self.task_id}: mounts[{index}]")
            mounts.append(Mount(target=mount.target, source=source, type=mount.type, read_only=mount.read_only))
        run_dir_host = mount_map.to_host(
            f"{config.runs_root}/{identity.container_name()}", "runs_root (dood config)"
        )
        mounts.append(Mount(target=RUN_DIR_IN_CONTAINER, source=run_dir_host, type="bind"))
        environment = {str(k): str(v) for k, v in self.environment.items()}
        environment.update({str(k): str(v) for k, v in self.private_environment.items()})
        environment.update(_identity_env(identity, context))
        environment.update(result_env())
        spec = ContainerSpec(
            identity=identity,
            image=self.image,
            command=self.command,
            entrypoint=self.entrypoint,
            environment=environment,
            mounts=mounts,
            working_dir=self.working_dir,
            user=self.user,
            labels={**config.defaults.labels, **check_user_labels(self.labels, f"{self.task_id}: labels")},
            resources=self.container_resources.merged_over(config.defaults.resources),
            network=self.network or config.defaults.network,
        )
        return spec, f"{config.runs_root}/{identity.container_name()}"

    # --- running ---

    def execute(self, context: Context) -> Any:
        config = load_config(self.config_path)
        self._grace_seconds = (
            self.stop_grace_period
            if self.stop_grace_period is not None
            else config.defaults.stop_grace_period_seconds
        )
        identity = TaskIdentity.from_context(context)
        hook = DoodHook(config)
        spec, run_dir = self.build_spec(config, hook, identity, context)
        launcher = self._launcher = ContainerLauncher(hook.api)
        launcher.ensure_image(spec.image, self.pull_policy or config.defaults.pull_policy)
        prepare_run_dir(config.runs_root, spec.name)
        self.log.info("Creating container %s from %s", spec.name, spec.image)
        self._container_id = launcher.create(spec)
        succeeded = False
        try:
            launcher.start(self._container_id)
            forwarder = launcher.forward_logs(self._container_id, self._emit)
            outcome = launcher.wait(self._container_id)
            result = self._finish(spec.name, outcome, forwarder.tail, run_dir, config)
            succeeded = True
            return result
        except BaseException:
            if not succeeded:
                launcher.stop(self._container_id, self._grace_seconds)
            raise
        finally:
            self._cleanup(succeeded, config.defaults.auto_remove)

    def _emit(self, line: str) -> None:
        self.log.info("%s", line)

    def _finish(self, name: str, outcome: Outcome, tail, run_dir: str, config: DoodConfig) -> Any:
        """Map the container's outcome to Airflow's success / skip / failure."""
        if outcome.exit_code != 0 and outcome.exit_code in self.skip_on_exit_code:
            raise AirflowSkipException(f"Container {name} exited with code {outcome.exit_code} (skip_on_exit_code)")
        if outcome.exit_code != 0:
            raise ContainerFailed(
                container=name,
                exit_code=outcome.exit_code,
                oom_killed=outcome.oom_killed,
                log_tail=list(tail),
                error=outcome.error,
            )
        return read_result(run_dir, config.max_result_bytes)

    def _cleanup(self, succeeded: bool, default_policy: AutoRemove) -> None:
        policy = self.auto_remove or default_policy
        if self._launcher and self._container_id and (policy == "always" or (policy == "on_success" and succeeded)):
            self._launcher.remove(self._container_id)
            self._container_id = None

    def on_kill(self) -> None:
        """Kill from Airflow (mark failed, timeout, SIGTERM): stop the container with grace, then remove it."""
        if self._launcher and self._container_id:
            self.log.info("Stopping container %s (grace %ss)", self._container_id[:12], self._grace_seconds)
            self._launcher.stop(self._container_id, self._grace_seconds)
            self._launcher.remove(self._container_id)
            self._container_id = None


def _identity_env(identity: TaskIdentity, context: Context) -> dict[str, str]:
    """Run identity and data interval, so the container can key its outputs (documented names)."""

    def iso(key: str) -> str:
        value = context.get(key)
        return value.isoformat() if value is not None else ""

    return {
        "DOOD_DAG_ID": identity.dag_id,
        "DOOD_TASK_ID": identity.task_id,
        "DOOD_RUN_ID": identity.run_id,
        "DOOD_MAP_INDEX": str(identity.map_index),
        "DOOD_TRY_NUMBER": str(identity.try_number),
        "DOOD_LOGICAL_DATE": iso("logical_date"),
        "DOOD_DATA_INTERVAL_START": iso("data_interval_start"),
        "DOOD_DATA_INTERVAL_END": iso("data_interval_end"),
    }


def _validated_resources(resources: Resources | Mapping[str, Any] | None, task_id: str) -> Resources:
    if isinstance(resources, Resources):
        return resources
    try:
        return Resources.model_validate(resources or {})
    except ValidationError as exc:
        problems = "; ".join(f"resources.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise DoodConfigError(f"{task_id}: {problems}") from None


def _one_of(value: str | None, allowed_type: Any, field: str, task_id: str) -> Any:
    allowed = get_args(allowed_type)
    if value is not None and value not in allowed:
        raise DoodConfigError(f"{task_id}: {field}={value!r} is not one of {list(allowed)}")
    return value


def _exit_codes(codes: int | Iterable[int] | None, task_id: str) -> frozenset[int]:
    if codes is None:
        return frozenset()
    values = [codes] if isinstance(codes, int) else list(codes)
    if not all(isinstance(code, int) and 0 < code < 256 for code in values):
        raise DoodConfigError(f"{task_id}: skip_on_exit_code must be exit codes 1-255, got {codes!r}")
    return frozenset(values)
