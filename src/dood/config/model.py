"""The shared dood config (`config/dood.yaml`): one typed model that is also its documentation.

Every process that launches or waits for containers (workers, triggerer, janitor, tests) reads the
same file, so the mount map and container defaults cannot drift between them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from dood.config.endpoints import DockerEndpoint, Host, MountMapEntry, _Strict
from dood.config.file import CONFIG_ENV_VAR, DEFAULT_CONFIG_PATH, config_path, read_config_file
from dood.config.gpu_inventory import GpuInventory
from dood.config.pipelines import PIPELINE_NAME, Pipeline
from dood.config.placement import pipeline_problems
from dood.config.resources import Resources
from dood.config.tracking import Tracking
from dood.exceptions import DoodConfigError
from dood.naming import DEFAULT_STACK, HOST_PATTERN, STACK_PATTERN
from dood.policy import Policy

__all__ = ["CONFIG_ENV_VAR", "DEFAULT_CONFIG_PATH", "DoodConfig", "config_path", "load_config", "parse_config"]

#: The name (under `hosts:`) of the Docker host this process runs on; unset: the single-host behaviour.
HOST_ENV_VAR = "DOOD_HOST"

AutoRemove = Literal["always", "on_success", "never"]
PullPolicy = Literal["if_not_present", "always", "never"]


class MountDiscovery(_Strict):
    """Whether to learn the mount map by inspecting Airflow's own container through the socket."""

    mode: Literal["auto", "off", "required"] = Field(
        default="auto",
        description=(
            "auto: inspect our own container through the socket and check the configured map against its "
            "mounts (no container of ours on that daemon means Airflow is on the host: identity for "
            "uncovered paths); off: the configured map only (identity when empty); required: like auto, "
            "but fail when our own container cannot be found."
        ),
    )

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        """YAML 1.1 reads an unquoted `off` (and `no`, `false`) as False: that can only mean "off"."""
        return "off" if value is False else value


class ContainerDefaults(_Strict):
    """Defaults applied to every launched container; operators may override each one."""

    network: str | None = Field(
        default=None,
        description="Docker network the containers join; none means Docker's default bridge.",
        examples=["dood-net"],
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Extra labels on every container.")
    user: str | None = Field(
        default=None,
        pattern=r"^[0-9]+(:[0-9]+)?$",
        description=(
            "Numeric 'uid:gid' every container runs as unless its task names a user. None: the Airflow "
            "process's own uid:gid, or 50000:0 (the Airflow image's user) when Airflow runs as root. "
            "Containers never run as root unless policy.allow_root_user (docs/security.md)."
        ),
        examples=["50000:0"],
    )
    resources: Resources = Field(default_factory=Resources, description="Default resource limits.")
    auto_remove: AutoRemove = Field(
        default="always",
        description="When to remove a container after it ended: always, on_success (keep failures), never.",
    )
    pull_policy: PullPolicy = Field(default="if_not_present", description="When to pull the image.")
    log_lines_per_record: int = Field(
        default=100,
        ge=1,
        description=(
            "At most this many container lines that arrived together share one task-log record (in order, "
            "without delay); 1 gives one record per line, at several times the CPU cost for chatty containers."
        ),
    )
    stop_grace_period_seconds: int = Field(
        default=30, ge=0, description="Seconds between SIGTERM and SIGKILL when a container is stopped."
    )
    init: bool = Field(
        default=True,
        description=(
            "Run an init process (Docker's tini) as PID 1, so SIGTERM reaches the step: a program that is PID 1 "
            "itself (python, sh) ignores SIGTERM unless it handles it, and each stop then waits the whole grace "
            "period. False: the image's entrypoint is PID 1."
        ),
    )

    @field_validator("user")
    @classmethod
    def _explicit_group(cls, value: str | None) -> str | None:
        """`uid` alone means `uid:0` (the group is never left to the image's /etc/passwd and /etc/group)."""
        return _with_group(value) if value is not None else None


class DoodConfig(_Strict):
    """Root of `config/dood.yaml`."""

    stack: str = Field(
        default_factory=lambda: os.environ.get("DOOD_STACK") or DEFAULT_STACK,
        pattern=STACK_PATTERN,
        description=(
            "This deployment's name, stamped on every container it launches (label dood.stack): the janitor, "
            "reattach, the sensor and dood-proxy only ever see containers of their own stack, so stacks (or "
            "teams) sharing a Docker host stay apart. Behind dood-proxy the proxy's stack wins. Defaults to "
            "$DOOD_STACK, else 'dood'."
        ),
        examples=["ml-team-a"],
    )

    docker: DockerEndpoint = Field(default_factory=DockerEndpoint)
    mount_map: tuple[MountMapEntry, ...] = Field(
        default=(),
        description="Airflow-side path -> host path pairs; longest prefix wins. Empty on the host means identity.",
    )
    mount_discovery: MountDiscovery = Field(default_factory=MountDiscovery)
    runs_root: str = Field(
        default="/tmp/dood-runs",  # noqa: S108 - a default for trying it out; docs/config.md says to set it
        description=(
            "Airflow-side directory holding one run directory per launched container (its result file). "
            "Must be covered by the mount map when Airflow runs in a container."
        ),
    )
    max_result_bytes: int = Field(default=1_048_576, gt=0, description="Largest result file accepted as XCom.")
    defaults: ContainerDefaults = Field(default_factory=ContainerDefaults)
    policy: Policy = Field(
        default_factory=Policy,
        description=(
            "What launched containers may ask of the Docker host; checked before create and enforced by "
            "dood-proxy (docs/security.md)."
        ),
    )
    gpus: GpuInventory = Field(
        default_factory=GpuInventory,
        description="The Docker host's GPUs, handed out one container at a time (docs/gpus.md).",
    )
    hosts: dict[str, Host] = Field(
        default_factory=dict,
        description=(
            "Several Docker hosts behind Airflow's CeleryExecutor, by name (docs/hosts.md). A process names the "
            "host it runs on in $DOOD_HOST and then uses that host's proxy, GPUs and mount map; steps are placed "
            "on hosts by queue. Empty: one Docker host, the top-level `docker`."
        ),
    )
    pipelines: dict[str, Pipeline] = Field(
        default_factory=dict, description="Retraining pipelines; each becomes a DAG named dood_<name>."
    )
    tracking: Tracking = Field(
        default_factory=Tracking,
        description="Experiment tracking of every step's run (MLflow); off unless configured (docs/lifecycle.md).",
    )

    #: The host this view is of ($DOOD_HOST, `on_host`): None for the single-host config.
    _host: str | None = PrivateAttr(default=None)
    #: Pipelines `load_config` set aside as invalid: name -> their problems (`pipeline_errors`).
    _pipeline_errors: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("pipelines")
    @classmethod
    def _pipeline_names(cls, value: dict[str, Pipeline]) -> dict[str, Pipeline]:
        for name in value:
            if not PIPELINE_NAME.fullmatch(name):
                raise ValueError(f"pipeline name {name!r} may hold only letters, digits and underscores")
        return value

    @field_validator("runs_root")
    @classmethod
    def _absolute_root(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must be an absolute path, got {value!r}")
        return os.path.normpath(value)

    @field_validator("hosts")
    @classmethod
    def _host_names(cls, value: dict[str, Host]) -> dict[str, Host]:
        for name in value:
            if not re.match(HOST_PATTERN, name):
                raise ValueError(f"host name {name!r} must match {HOST_PATTERN} (it becomes a label and a queue)")
        queues: dict[str, str] = {}
        for name, host in value.items():
            queue = host.queue or f"dood-{name}"
            if queue in queues:
                raise ValueError(f"hosts {queues[queue]!r} and {name!r} both use queue {queue!r}; give each its own")
            queues[queue] = name
        return value

    @model_validator(mode="after")
    def _steps_identity_allowed(self) -> DoodConfig:
        """Unless the policy lists its own `allowed_users`, it allows the identity the steps run as:
        `defaults.user`, else this process's (what the operator sends; dood-proxy, which never takes its own
        uid, reads `defaults.user` or 50000:0)."""
        if "allowed_users" not in self.policy.model_fields_set:
            user = self.defaults.user or _process_user()
            policy = Policy.model_validate({**self.policy.model_dump(exclude_unset=True), "allowed_users": [user]})
            object.__setattr__(self, "policy", policy)
        return self

    @model_validator(mode="after")
    def _placements(self) -> DoodConfig:
        """Every step's placement names configured hosts, and steps on several hosts share a data root."""
        problems = [
            f"pipelines.{name}: {problem}"
            for name, pipeline in self.pipelines.items()
            for problem in pipeline_problems(pipeline, self.hosts, self.mount_map)
        ]
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def pipeline_errors(self) -> Mapping[str, str]:
        """Pipelines set aside because they are invalid (name -> each bad field and why; `load_config` sets
        them aside, so one bad pipeline fails alone): they have no DAG, dags/dood_pipeline_errors.py reports them."""
        return dict(self._pipeline_errors)

    # --- the view of one host ---

    @property
    def host(self) -> str | None:
        """The Docker host this config is the view of ($DOOD_HOST), or None (one Docker host)."""
        return self._host

    def on_host(self, name: str | None) -> DoodConfig:
        """This config as seen by a process on host `name`: that host's proxy (`local_docker`, else `docker`),
        mount map and GPUs in place of the top-level ones, so everything reading `docker`, `mount_map` and
        `gpus` talks to its own host. None: unchanged (the single-host behaviour)."""
        if name is None or name == self._host:
            return self
        if name not in self.hosts:
            known = ", ".join(sorted(self.hosts)) or "none: the config has no `hosts:`"
            raise DoodConfigError(
                f"${HOST_ENV_VAR}={name!r} names no host of the dood config (hosts: {known}). Set it to the name, "
                f"under `hosts:`, of the Docker host this process runs on, or unset it for a single Docker host."
            )
        host = self.hosts[name]
        view = self.model_copy(
            update={
                "docker": host.local_docker or host.docker,
                "mount_map": self.mount_map if host.mount_map is None else host.mount_map,
                "gpus": host.gpus or self.gpus,
            }
        )
        view._host = name
        return view

    @property
    def reachable_docker(self) -> DockerEndpoint:
        """The Docker endpoint of this view as *other* processes reach it (a triggerer on another host): the
        host's `docker`, not its `local_docker`."""
        return self.hosts[self._host].docker if self._host else self.docker


def parse_config(
    data: object, source: str = "<dict>", *, section: str | None = None, set_aside_invalid_pipelines: bool = False
) -> Any:
    """Validate raw data (the whole config, or with `section` that section alone: `policy`...); the error
    names each bad field's path and what it accepts. With `set_aside_invalid_pipelines`, each pipeline is
    validated alone and an invalid one is left out (`DoodConfig.pipeline_errors`), not fatal."""
    try:
        if section is None and set_aside_invalid_pipelines and isinstance(data, Mapping):
            return _set_aside_invalid_pipelines(data, source)
        if section is None:
            return DoodConfig.model_validate(data or {})
        field = DoodConfig.model_fields.get(section)
        if field is None:
            raise DoodConfigError(f"dood config has no section {section!r} (sections: {list(DoodConfig.model_fields)})")
        if data is None:
            return field.get_default(call_default_factory=True)
        return TypeAdapter(field.annotation).validate_python(data)  # type: ignore[arg-type] # a field has one
    except ValidationError as exc:
        prefix = f"{section}." if section else ""
        problems = "\n".join(
            f"  - {prefix}{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            # the input of a root error is the whole config: not repeated
            + (f" (got {err['input']!r})" if err["type"] not in ("missing", "extra_forbidden") and err["loc"] else "")
            for err in exc.errors()
        )
        raise DoodConfigError(f"Invalid dood config {source}:\n{problems}") from None


def load_config(path: str | os.PathLike[str] | None = None, *, section: str | None = None, view: bool = True) -> Any:
    """Load and validate the config (`path`, else `config_path()`); `${VAR}` references are expanded from the
    environment first. With $DOOD_HOST set, the view of that host (`DoodConfig.on_host`): its proxy, mount map
    and GPUs; `view=False` skips it (DAG parsing reads pipelines and hosts, and talks to no Docker). With
    `section`, only that section, validated alone (dood-proxy reads its `policy:` so)."""
    data, source = read_config_file(path)
    if section == "policy":  # alone, as dood-proxy reads it: with defaults.user as its default identity
        return parse_config(_policy_with_default_user(data), source, section=section)
    if section is not None:
        return parse_config(data.get(section), source, section=section)
    config = parse_config(data, source, set_aside_invalid_pipelines=True)  # one bad pipeline fails alone
    return config.on_host(os.environ.get(HOST_ENV_VAR) or None) if view else config


def _set_aside_invalid_pipelines(data: Mapping[str, Any], source: str) -> DoodConfig:
    """The config with every valid pipeline; each pipeline is validated alone (with the rest of the config, for
    its placements), and an invalid one is left out with its problems in `pipeline_errors`, so it cannot take
    the other pipelines' DAGs, the janitor or running tasks down with it. An error outside `pipelines:` (or a
    `pipelines:` that is no mapping) still fails the whole config, and says so."""
    pipelines = data.get("pipelines")
    if not isinstance(pipelines, Mapping) or not pipelines:
        return parse_config(data, source)
    try:
        rest = parse_config({**data, "pipelines": {}}, source)
    except DoodConfigError as exc:
        raise DoodConfigError(
            f"{exc}\nThis is outside `pipelines:`, so every dood DAG (pipelines and janitor) and every dood task "
            "fails until it is fixed; an error inside one pipeline fails that pipeline alone."
        ) from None
    valid: dict[str, Pipeline] = {}
    errors: dict[str, str] = {}
    for name, pipeline in pipelines.items():
        if not isinstance(name, str) or not PIPELINE_NAME.fullmatch(name):
            errors[str(name)] = f"  - pipelines.{name}: the name may hold only letters, digits and underscores"
            continue
        try:
            valid[name] = parse_config({**data, "pipelines": {name: pipeline}}, source).pipelines[name]
        except DoodConfigError as exc:
            errors[str(name)] = str(exc).partition(":\n")[2] or str(exc)  # its problems, one line each
    config = rest.model_copy(update={"pipelines": valid})
    config._pipeline_errors = errors
    return config


def _process_user() -> str:
    """This process's `uid:gid`, or the Airflow image's user (50000:0) when it is root: who steps run as
    when nothing names a user (`dood.mounts.run_directories.default_user`)."""
    uid = os.geteuid()
    return f"{uid}:{os.getegid()}" if uid != 0 else "50000:0"


def _policy_with_default_user(data: Mapping[str, Any]) -> Any:
    """The `policy:` section, with `allowed_users` defaulting to `[defaults.user]` when that is set: the
    identity the steps run as is the one the policy allows, unless the policy lists its own."""
    policy = data.get("policy")
    defaults = data.get("defaults")
    user = defaults.get("user") if isinstance(defaults, Mapping) else None
    if user is None or (isinstance(policy, Mapping) and "allowed_users" in policy):
        return policy
    if policy is not None and not isinstance(policy, Mapping):
        return policy  # its own error, from validation
    user = str(user)
    return {**(policy or {}), "allowed_users": [_with_group(user)]}


def _with_group(user: str) -> str:
    return user if ":" in user else f"{user}:0"


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """The `policy:` section of a config file: `load_config(path, section="policy")`."""
    return load_config(path, section="policy")


def parse_policy(data: object, source: str = "<dict>") -> Policy:
    """Validate a `policy:` section: `parse_config(data, source, section="policy")`."""
    return parse_config(data, source, section="policy")
