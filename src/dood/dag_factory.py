"""One DAG per configured pipeline: prepare -> train -> evaluate -> promote.

Runs at DAG-parse time, so it only reads the config file: no Docker, no network. A pipeline's assets (its
`inputs`, its `model_asset`) become prepare's inlets and promote's outlet, and an asset `schedule` Airflow's
asset condition (with `cron`: an AssetOrTimeSchedule).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, AssetAll, AssetAny, Param
from airflow.sdk.definitions.timetables.assets import AssetOrTimeSchedule

from dood.config.model import DoodConfig, load_config
from dood.config.model import config_path as dood_config_path
from dood.config.pipelines import STEP_NAMES, AssetSchedule
from dood.config.placement import step_placement
from dood.exceptions import InvalidPipelines
from dood.mounts.checkpoints import CHECKPOINTS_DIR_NAME
from dood.naming import DAG_ID_PREFIX
from dood.operators.assets import airflow_asset
from dood.operators.pipeline_step import PipelineStepOperator

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow.sdk.definitions.asset import BaseAsset

    from dood.config.endpoints import Host
    from dood.config.pipelines import Pipeline, Step


def run_params(pipeline: Pipeline) -> dict[str, Param]:
    """The trigger form: typed hyperparameters with limits, plus dataset date, image tag, GPUs, force promote."""

    def number(value: float) -> float | int:
        return int(value) if hp.type == "integer" else value

    params = {}
    for name, hp in pipeline.hyperparameters.items():
        limits: dict[str, Any] = {
            k: number(v) for k, v in (("minimum", hp.minimum), ("maximum", hp.maximum)) if v is not None
        }
        bounds = "–".join(str(limits[k]) for k in ("minimum", "maximum") if k in limits)
        params[name] = Param(
            number(hp.default),
            type=[hp.type, "null"],  # has a default: optional in the form (empty = the default), no required-star
            title=hp.description or name.replace("_", " "),
            # Plain text: the form shows `description` as it is (backticks would show literally).
            description=f"{name}" + (f", {bounds}" if bounds else "") + f"; default {number(hp.default)}.",
            **limits,
        )
    params.update(
        dataset_date=Param(
            None,
            type=["null", "string"],
            format="date",
            title="dataset date",
            description="Date of the data slice to train on; empty means the run's data interval.",
        ),
        # Every field with a default is nullable: the form then shows no required-star, and a field
        # emptied there means its default (PipelineStepOperator fills it in).
        image_tag=Param(
            pipeline.image_tag,
            type=["string", "null"],
            pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$",
            title="image tag",
            description=f"Tag of every step's image; default {pipeline.image_tag}.",
        ),
        gpus=Param(
            0,
            type=["integer", "null"],
            minimum=0,
            maximum=pipeline.max_gpus,
            title="GPUs for training",
            description=(
                f"GPUs the train step gets, 0–{pipeline.max_gpus}, each its own (never shared with another run)."
                if pipeline.max_gpus
                else "This pipeline trains on CPUs only: its max_gpus is 0 in the dood config (raise it, and "
                "allow GPUs in the policy, to offer GPUs here)."
            ),
        ),
        min_accuracy=Param(
            pipeline.quality_gate.minimum,
            type=["number", "null"],
            minimum=0,
            maximum=1,
            title=f"minimum {pipeline.quality_gate.metric}",
            description=f"Evaluate fails the run below this, 0–1; default {pipeline.quality_gate.minimum:g}.",
        ),
        force_promote=Param(
            False,
            type=["boolean", "null"],
            title="force promote",
            description="Replace the champion even when the new model is not better.",
        ),
    )
    return params


def step_retries(step: Step) -> dict[str, object]:
    """A step's own `retries` and `retry_delay` (BaseOperator arguments), where it overrides the pipeline's."""
    own: dict[str, object] = {}
    if step.retries is not None:
        own["retries"] = step.retries
    if step.retry_delay_seconds is not None:
        own["retry_delay"] = timedelta(seconds=step.retry_delay_seconds)
    return own


def step_checkpoint(pipeline: Pipeline, step: Step) -> dict[str, object]:
    """A step's checkpoint (`checkpoint: true`): below the pipeline's artifact root, which every host running
    its steps mounts (a retry may run on another host of a shared queue)."""
    if not step.checkpoint:
        return {}
    return {
        "checkpoint": True,
        "checkpoint_retention": step.checkpoint_retention,
        "checkpoint_root": f"{pipeline.artifact_root.rstrip('/')}/{CHECKPOINTS_DIR_NAME}",
    }


def asset_condition(pipeline: Pipeline, condition: Any) -> BaseAsset:
    """A schedule's asset condition as Airflow's: an input's asset, a list (all), {all: [...]}, {any: [...]}."""
    if isinstance(condition, str):
        return airflow_asset(pipeline.input_asset(condition))
    if isinstance(condition, list):
        parts = [asset_condition(pipeline, item) for item in condition]
        return parts[0] if len(parts) == 1 else AssetAll(*parts)
    ((operator, items),) = condition.items()
    parts = [asset_condition(pipeline, item) for item in items]
    return (AssetAll if operator == "all" else AssetAny)(*parts)


def pipeline_schedule(pipeline: Pipeline) -> Any:
    """DAG(schedule=...): the config's string or null as it is; an asset schedule as its condition, or with
    `cron` an AssetOrTimeSchedule over the timetable Airflow makes of that cron string."""
    if not isinstance(pipeline.schedule, AssetSchedule):
        return pipeline.schedule
    condition = asset_condition(pipeline, pipeline.schedule.assets)
    if pipeline.schedule.cron is None:
        return condition
    import pendulum
    from airflow.sdk.definitions.dag import _create_timetable  # what DAG(schedule="<cron>") would use

    timetable = _create_timetable(pipeline.schedule.cron, pendulum.UTC)  # the DAG's start_date is in UTC
    return AssetOrTimeSchedule(timetable=timetable, assets=condition)


def step_assets(pipeline: Pipeline, step_name: str) -> dict[str, object]:
    """prepare reads the pipeline's inputs (inlets); promote produces its model asset (outlet)."""
    if step_name == "prepare" and pipeline.inputs:
        return {"inlets": [airflow_asset(ref) for ref in pipeline.inputs]}
    if step_name == "promote" and pipeline.model_asset is not None:
        return {"outlets": [airflow_asset(pipeline.model_asset)]}
    return {}


def build_dag(
    name: str, pipeline: Pipeline, config_path: str | None = None, hosts: Mapping[str, Host] | None = None
) -> DAG:
    """The DAG of one pipeline; a step placed on `hosts` gets their Celery queue and pool (dood.config.placement)."""
    dag = DAG(
        dag_id=f"{DAG_ID_PREFIX}{name}",
        description=pipeline.description or f"Retraining pipeline {name} (dood)",
        schedule=pipeline_schedule(pipeline),
        start_date=datetime.combine(pipeline.start_date, datetime.min.time(), tzinfo=timezone.utc),
        catchup=pipeline.catchup,
        max_active_runs=pipeline.max_active_runs,
        params=run_params(pipeline),
        default_args={
            "retries": pipeline.retries,
            "retry_delay": timedelta(seconds=pipeline.retry_delay_seconds),
            # Every kind of run obeys this, backfills too (their own max_active_runs does not bound trainings).
            "max_active_tis_per_dag": pipeline.max_active_trainings or pipeline.max_active_runs,
            **({"pool": pipeline.pool} if pipeline.pool else {}),
        },
        tags=["dood", "ml", name],
        doc_md=f"Retraining pipeline **{name}** from the dood config: steps {list(pipeline.steps)}.",
    )
    previous = None
    with dag:
        for step_name in STEP_NAMES:
            if step_name not in pipeline.steps:
                continue
            task = PipelineStepOperator(
                task_id=step_name,
                pipeline_name=name,
                pipeline=pipeline,
                step_name=step_name,
                config_path=config_path,
                placement=step_placement(pipeline.steps[step_name], hosts or {}),
                **step_retries(pipeline.steps[step_name]),
                **step_checkpoint(pipeline, pipeline.steps[step_name]),
                **step_assets(pipeline, step_name),
            )
            if previous is not None:
                previous >> task
            previous = task
    return dag


def build_dags(config: DoodConfig | None = None, config_path: str | None = None) -> dict[str, DAG]:
    """Every valid pipeline's DAG, keyed by dag_id: `load_config` sets an invalid pipeline aside (it fails
    alone: `raise_for_invalid_pipelines` reports it from a DAG file of its own)."""
    config = config or load_config(config_path, view=False)  # parsing needs no host's view
    dags = (build_dag(n, p, config_path, config.hosts) for n, p in config.pipelines.items())
    return {dag.dag_id: dag for dag in dags}


def raise_for_invalid_pipelines(config: DoodConfig | None = None, config_path: str | None = None) -> None:
    """Raise `InvalidPipelines` naming every invalid pipeline and its fields; nothing when all are valid.

    Called by a DAG file that holds no DAG (dags/dood_pipeline_errors.py), so Airflow lists the error as that
    file's import error: Airflow marks *every* DAG of a file with an import error stale, so the valid
    pipelines' DAGs (dags/dood_pipelines.py) and the janitor must live in other files."""
    config = config or load_config(config_path, view=False)
    if config.pipeline_errors:
        raise InvalidPipelines(config.pipeline_errors, str(config_path or dood_config_path()))
