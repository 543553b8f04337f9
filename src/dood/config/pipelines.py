"""Pipelines in the shared config: schedule, data/model/artifact roots, steps and the trigger form's Params.

Validated by the same pydantic model as the rest of `dood.yaml`, so an error names the pipeline,
the step and the field (`pipelines.retrain.steps.train.resources.memory`). `load_config` validates each
pipeline alone: an invalid one is set aside (`DoodConfig.pipeline_errors`) and fails alone, as the import
error of dags/dood_pipeline_errors.py; the other pipelines keep their DAGs and their tasks run.
"""

from __future__ import annotations

import re
import urllib.parse
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from dood.config.resources import Resources
from dood.naming import check_user_labels

STEP_NAMES = ("prepare", "train", "evaluate", "promote")
#: What a pipeline's name may hold: it becomes the DAG id dood_<name> and a container label.
PIPELINE_NAME = re.compile(r"[a-zA-Z0-9_]+")
_IMAGE_WITH_TAG = re.compile(r":[^/]+$|@sha256:")
_IDENTIFIER = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
#: Airflow's schedule presets; any other string is a cron expression.
SCHEDULE_PRESETS = ("@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")
_ASSET_TEXT_LIMIT = 1500  # Airflow's limit of an asset's name and URI
_ASSET_SCHEDULE_HELP = (
    'give a cron expression or preset ("@weekly"), null, or an asset schedule: {assets: <input name>} '
    "(also [a, b] for all of them, {all: [...]}, {any: [...]}), optionally with cron: for time + assets"
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Step(_Strict):
    """One container step of a pipeline."""

    image: str = Field(
        description="Image repository without tag; the tag comes from the run's image_tag.",
        examples=["dood-ml-example", "registry.example.com/ml/retrain"],
    )
    command: list[str] = Field(description="Command run in the container.", examples=[["python", "/opt/app/train.py"]])
    resources: Resources = Field(
        default_factory=Resources, description="CPU, memory, shm, GPUs (train gets the run's gpus Param)."
    )
    environment: dict[str, str] = Field(default_factory=dict, description="Extra environment variables.")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra container labels.")
    host: str | None = Field(
        default=None,
        description="Run on this Docker host (a name under `hosts:`): its queue, its pool (docs/hosts.md).",
        examples=["gpu-1"],
    )
    hosts: tuple[str, ...] | None = Field(
        default=None, description="Run on any of these hosts (their shared queue).", examples=[["gpu-1", "gpu-2"]]
    )
    host_labels: dict[str, str] | None = Field(
        default=None,
        description="Run on any host carrying all these labels (hosts.<name>.labels).",
        examples=[{"gpu": "a100"}],
    )
    retries: int | None = Field(
        default=None,
        ge=0,
        description="Retries of this step; none: the pipeline's `retries`. A retry adopts the earlier try's "
        "container while it still runs (a worker that died), so a retry costs a wait, not a second training.",
    )
    retry_delay_seconds: int | None = Field(
        default=None,
        ge=0,
        le=86400,
        description="Seconds between a failed try and the next of this step; none: the pipeline's "
        "`retry_delay_seconds`.",
    )
    checkpoint: bool = Field(
        default=False,
        description="Mount a checkpoint directory at $DOOD_CHECKPOINT_DIR, the same for every try of the task "
        "instance (under `<artifact_root>/dood-checkpoints`): a retried training resumes from what an earlier "
        "try saved. Kept when a try fails, removed when the step succeeds; a clear starts from an empty one.",
    )
    checkpoint_retention: int = Field(
        default=0,
        ge=0,
        le=100,
        description="With `checkpoint`: keep the step's N newest finished checkpoints instead of removing them.",
    )

    @model_validator(mode="after")
    def _one_placement(self) -> Step:
        given = [name for name in ("host", "hosts", "host_labels") if getattr(self, name)]
        if len(given) > 1:
            raise ValueError(f"give at most one of host, hosts, host_labels (got {', '.join(given)})")
        return self

    @field_validator("image")
    @classmethod
    def _no_tag(cls, value: str) -> str:
        if _IMAGE_WITH_TAG.search(value):
            raise ValueError(f"give the image without tag ({value!r}); the tag comes from the pipeline's image_tag")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return check_user_labels(value)


class HyperParameter(_Strict):
    """A typed hyperparameter shown in Airflow's trigger form, with its limits."""

    type: Literal["integer", "number"] = "integer"
    default: float
    minimum: float | None = None
    maximum: float | None = None
    description: str = ""

    @model_validator(mode="after")
    def _default_within_limits(self) -> HyperParameter:
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"minimum {self.minimum} is above maximum {self.maximum}")
        if (self.minimum is not None and self.default < self.minimum) or (
            self.maximum is not None and self.default > self.maximum
        ):
            raise ValueError(f"default {self.default} is outside [{self.minimum}, {self.maximum}]")
        if self.type == "integer" and self.default != int(self.default):
            raise ValueError(f"default {self.default} is not an integer")
        return self


class QualityGate(_Strict):
    """Evaluate fails the run when the metric is below this; promote compares the same metric."""

    metric: str = "accuracy"
    minimum: float = Field(default=0.8, ge=0, le=1)


class Promotion(_Strict):
    """When promote may replace the champion, beyond "the metric is better" (force_promote overrides all)."""

    from_backfill: bool = Field(
        default=False,
        description="Whether a backfill run may replace the champion. Off: backfills re-create history (their "
        "partitions, metrics) but never crown a model trained on older data.",
    )
    require_newer_data: bool = Field(
        default=True,
        description="Promote only when this run's data interval ends no earlier than the champion's (the "
        "champion's source.json records it).",
    )


def _check_cron(value: str, field: str, *, presets: tuple[str, ...] = SCHEDULE_PRESETS) -> str:
    """A preset or a cron expression croniter (Airflow's parser) accepts; checked here so a bad one fails its
    pipeline alone, at parse time, instead of the whole DAG file when Airflow serializes the DAG."""
    if value.startswith("@"):
        if value not in presets:
            raise ValueError(f"{field} {value!r} is not one of Airflow's presets {list(presets)}")
        return value
    try:
        from croniter import croniter  # Airflow's own dependency; the dood-proxy's processes may lack it
    except ImportError:  # pragma: no cover - no Airflow here: Airflow checks it when it parses the DAG
        return value
    if not croniter.is_valid(value):
        raise ValueError(f"{field} {value!r} is not a cron expression (minute hour day month weekday) nor a preset")
    return value


def _check_asset_text(value: str, field: str) -> str:
    if not value or value.isspace():
        raise ValueError(f"{field} must not be empty")
    if len(value) > _ASSET_TEXT_LIMIT:
        raise ValueError(f"{field} is longer than Airflow's {_ASSET_TEXT_LIMIT} characters")
    if not value.isascii() or not value.isprintable() or value != value.strip():
        raise ValueError(f"{field} {value!r} must be printable ASCII without leading or trailing spaces")
    return value


class AssetRef(_Strict):
    """An Airflow asset (data-aware scheduling): data a pipeline reads, or the champion model it produces."""

    uri: str = Field(
        description="The asset's URI, as Airflow identifies it (other DAGs, the REST API and the Assets view "
        "use the same one). The scheme 'airflow' is Airflow's own; no password.",
        examples=["file:///srv/ml/data/breast_cancer", "s3://ml-data/breast_cancer"],
    )
    name: str | None = Field(
        default=None,
        description="Its name in Airflow (and in this pipeline's `schedule`); default: the URI.",
        examples=["breast_cancer_data"],
    )

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        _check_asset_text(value, "uri")
        parts = urllib.parse.urlsplit(value)
        if parts.scheme.lower() == "airflow":
            raise ValueError(f"uri {value!r}: the scheme 'airflow' is reserved by Airflow; use another (file, s3...)")
        if parts.password:
            raise ValueError(f"uri {value!r} holds a password: an asset URI is shown to everyone, drop it")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is None:
            return value
        _check_asset_text(value, "name")
        if value in ("self", "context"):
            raise ValueError(f"name {value!r} is reserved by Airflow; choose another")
        return value

    @property
    def key(self) -> str:
        """The name Airflow gives it (its URI when it has none)."""
        return self.name or self.uri


#: An asset condition as written in the config: an input's name (or URI), a list (all of them),
#: {all: [...]} or {any: [...]}, nested at will.
AssetCondition = str | list[Any] | dict[str, Any]


def asset_condition_names(condition: Any, where: str = "assets") -> list[str]:
    """Every asset named in a schedule's condition, in order; ValueError naming where a shape is wrong."""
    if isinstance(condition, str):
        return [condition]
    if isinstance(condition, list):
        if not condition:
            raise ValueError(f"{where} is an empty list: name at least one asset")
        return [name for i, item in enumerate(condition) for name in asset_condition_names(item, f"{where}[{i}]")]
    if isinstance(condition, dict):
        if len(condition) != 1 or next(iter(condition)) not in ("all", "any"):
            raise ValueError(
                f"{where} {condition!r}: a mapping holds exactly one key, all or any, e.g. {{any: [a, b]}}"
            )
        ((operator, items),) = condition.items()
        if not isinstance(items, list) or not items:
            raise ValueError(f"{where}.{operator} must be a non-empty list of assets or conditions")
        return [
            name for i, item in enumerate(items) for name in asset_condition_names(item, f"{where}.{operator}[{i}]")
        ]
    raise ValueError(f"{where}: {condition!r} is not an asset name, a list, {{all: [...]}} nor {{any: [...]}}")


class AssetSchedule(_Strict):
    """Run when assets are updated (Airflow's data-aware scheduling), and also on a clock when `cron` is given."""

    assets: AssetCondition = Field(
        description="The assets whose updates start a run: the name (or URI) of one of the pipeline's `inputs`; "
        "a list, meaning all of them (each updated since the last run); {all: [...]} or {any: [...]}, nested.",
        examples=["breast_cancer_data", {"any": ["data_eu", "data_us"]}],
    )
    cron: str | None = Field(
        default=None,
        description="Also run on this cron expression or preset (Airflow's AssetOrTimeSchedule: whichever comes "
        "first). A run it starts has a data interval and can be backfilled; a run assets start has none.",
        examples=["@weekly", "0 3 * * 1"],
    )

    @field_validator("assets")
    @classmethod
    def _shape(cls, value: AssetCondition) -> AssetCondition:
        asset_condition_names(value)
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None:
            return value
        return _check_cron(
            value, "cron", presets=tuple(p for p in SCHEDULE_PRESETS if p not in ("@once", "@continuous"))
        )


class Pipeline(_Strict):
    """One retraining pipeline: becomes one DAG, prepare -> train -> evaluate -> promote."""

    description: str = ""
    inputs: tuple[AssetRef, ...] = Field(
        default=(),
        description="Airflow assets the prepare step reads (its inlets): the Assets view draws them, and a "
        "`schedule` of assets names them. A run they start gets the newest event's `dataset_date` extra as its "
        "dataset_date Param when the run gives none.",
        examples=[[{"uri": "file:///srv/ml/data/breast_cancer", "name": "breast_cancer_data"}]],
    )
    schedule: str | AssetSchedule | None = Field(
        default="@weekly",
        description="Cron or preset; null for manual runs only; or an asset schedule, {assets: ..., cron: ...}: "
        "run when the pipeline's `inputs` are updated (and on the clock too, with cron).",
        examples=["@weekly", "0 3 * * 1", {"assets": "breast_cancer_data"}, {"assets": "data", "cron": "@weekly"}],
    )
    model_asset: AssetRef | None = Field(
        default=None,
        description="Airflow asset of the champion model: promote's outlet. An event is emitted only when promote "
        "crowns a model, with extra {metrics, run_id, dag_id, model_path, model_digest}; a promote that keeps the "
        "champion is skipped and emits none. Needs a promote step.",
        examples=[{"uri": "file:///srv/ml/models/breast_cancer/champion", "name": "breast_cancer_model"}],
    )
    start_date: date = Field(default=date(2026, 1, 1), description="First data interval (for catchup/backfills).")
    catchup: bool = Field(default=False, description="Run every missed interval when the DAG is switched on.")
    max_active_runs: int = Field(
        default=1, ge=1, description="How many runs of the DAG at once (scheduled and manual)."
    )
    max_active_trainings: int | None = Field(
        default=None,
        ge=1,
        description=(
            "How many containers of each step (e.g. train) at once across all runs, backfills included (a "
            "backfill has its own max_active_runs; this task-level bound, max_active_tis_per_dag, holds for "
            "every kind of run). Default: max_active_runs."
        ),
    )
    pool: str | None = Field(default=None, description="Airflow pool bounding concurrent steps (create it first).")
    retries: int = Field(
        default=1,
        ge=0,
        description="Retries of each step (a step's `retries` overrides it). A try whose worker died fails "
        "after Airflow's task heartbeat timeout; its retry adopts the container, which ran on meanwhile "
        "(docs/hosts.md). With 0, that run fails while its container goes on.",
    )
    retry_delay_seconds: int = Field(
        default=15,
        ge=0,
        le=86400,
        description="Seconds between a failed try and the next, for each step (a step's own overrides it; "
        "Airflow's default is 300). Short, since a retry first adopts the earlier try's running container; "
        "a step that failed for real is started again that much sooner.",
    )
    data_root: str = Field(description="Input data (Airflow-side path), mounted read-only.")
    model_root: str = Field(description="Model registry (Airflow-side path) holding the champion.")
    artifact_root: str = Field(description="Where each run's partition (data slice, model, metrics) is written.")
    image_tag: str = Field(
        default="latest",
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$",
        description="Default image tag of every step; the trigger form can change it.",
    )
    hyperparameters: dict[str, HyperParameter] = Field(
        default_factory=dict, description="Typed hyperparameters for the trigger form (name -> type, default, limits)."
    )
    quality_gate: QualityGate = Field(default_factory=QualityGate)
    promotion: Promotion = Field(default_factory=Promotion)
    max_gpus: int = Field(default=0, ge=0, description="Upper limit of the trigger form's gpus Param.")
    steps: dict[Literal["prepare", "train", "evaluate", "promote"], Step]

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule_shape(cls, value: Any) -> Any:
        if value is None or isinstance(value, str | AssetSchedule):
            return _check_cron(value, "schedule") if isinstance(value, str) else value
        if isinstance(value, dict):
            try:  # one model, so an error names this shape's fields only (not also "not a valid string")
                return AssetSchedule.model_validate(value)
            except ValidationError as exc:
                problems, shape = [], False
                for error in exc.errors():
                    if error["type"] == "value_error":  # its message starts with the field's name
                        problems.append(f"schedule.{error['msg'].removeprefix('Value error, ')}")
                    else:
                        shape = True
                        problems.append(f"schedule.{'.'.join(str(p) for p in error['loc'])}: {error['msg']}")
                raise ValueError("; ".join(problems) + (f" ({_ASSET_SCHEDULE_HELP})" if shape else "")) from None
        raise ValueError(f"{value!r} is not a schedule: {_ASSET_SCHEDULE_HELP}")

    @field_validator("schedule")
    @classmethod
    def _schedule_inputs(cls, value: str | AssetSchedule | None, info: ValidationInfo) -> str | AssetSchedule | None:
        if not isinstance(value, AssetSchedule):
            return value
        inputs: tuple[AssetRef, ...] = info.data.get("inputs") or ()
        for name in asset_condition_names(value.assets):
            if not any(name in (asset.key, asset.uri) for asset in inputs):
                declared = sorted({asset.key for asset in inputs}) or "none"
                raise ValueError(
                    f"assets names {name!r}, which is not one of this pipeline's inputs (names: {declared}); "
                    f"declare it under inputs: [{{uri: ..., name: {name}}}], or use an input's name"
                )
        return value

    @field_validator("inputs")
    @classmethod
    def _distinct_inputs(cls, value: tuple[AssetRef, ...]) -> tuple[AssetRef, ...]:
        seen: dict[str, AssetRef] = {}
        for i, asset in enumerate(value):
            for key in {asset.key, asset.uri}:
                if key in seen and seen[key] != asset:
                    raise ValueError(f"[{i}]: {key!r} names two different inputs; give each its own name and uri")
                seen[key] = asset
        return value

    @field_validator("model_asset")
    @classmethod
    def _model_not_an_input(cls, value: AssetRef | None, info: ValidationInfo) -> AssetRef | None:
        if value is None:
            return value
        for asset in info.data.get("inputs") or ():
            clash = {value.key, value.uri} & {asset.key, asset.uri}
            if clash:
                raise ValueError(f"{sorted(clash)[0]!r} is also an input; the model needs an asset of its own")
        return value

    def input_asset(self, name: str) -> AssetRef:
        """The input a schedule's condition names (by name or URI)."""
        return next(a for a in self.inputs if name in (a.key, a.uri))

    @field_validator("hyperparameters")
    @classmethod
    def _names(cls, value: dict[str, HyperParameter]) -> dict[str, HyperParameter]:
        reserved = {"dataset_date", "image_tag", "gpus", "force_promote", "min_accuracy"}
        for name in value:
            if not _IDENTIFIER.match(name) or name in reserved:
                raise ValueError(f"{name!r} must be an identifier and not one of {sorted(reserved)}")
        return value

    @field_validator("steps")
    @classmethod
    def _required_steps(cls, value: dict[str, Step], info: ValidationInfo) -> dict[str, Step]:
        missing = [name for name in ("prepare", "train", "evaluate") if name not in value]
        if missing:
            raise ValueError(f"missing steps {missing}; prepare, train and evaluate are required, promote optional")
        if info.data.get("model_asset") is not None and "promote" not in value:
            raise ValueError("model_asset needs a promote step (its outlet): add steps.promote, or drop model_asset")
        return value

    @field_validator("data_root", "model_root", "artifact_root")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must be an absolute path (as Airflow sees it), got {value!r}")
        return value
