"""Pipelines in the shared config: schedule, data/model/artifact roots, steps and the trigger form's Params.

Validated by the same pydantic model as the rest of `dood.yaml`, so an error names the pipeline,
the step and the field (`pipelines.retrain.steps.train.resources.memory`). `load_config` validates each
pipeline alone: an invalid one is set aside (`DoodConfig.pipeline_errors`) and fails alone, as the import
error of dags/dood_pipeline_errors.py; the other pipelines keep their DAGs and their tasks run.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dood.config.resources import Resources
from dood.naming import check_user_labels

STEP_NAMES = ("prepare", "train", "evaluate", "promote")
#: What a pipeline's name may hold: it becomes the DAG id dood_<name> and a container label.
PIPELINE_NAME = re.compile(r"[a-zA-Z0-9_]+")
_IMAGE_WITH_TAG = re.compile(r":[^/]+$|@sha256:")
_IDENTIFIER = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


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


class Pipeline(_Strict):
    """One retraining pipeline: becomes one DAG, prepare -> train -> evaluate -> promote."""

    description: str = ""
    schedule: str | None = Field(
        default="@weekly", description="Cron or preset; null for manual runs only.", examples=["@weekly", "0 3 * * 1"]
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
    def _required_steps(cls, value: dict[str, Step]) -> dict[str, Step]:
        missing = [name for name in ("prepare", "train", "evaluate") if name not in value]
        if missing:
            raise ValueError(f"missing steps {missing}; prepare, train and evaluate are required, promote optional")
        return value

    @field_validator("data_root", "model_root", "artifact_root")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must be an absolute path (as Airflow sees it), got {value!r}")
        return value
