"""PipelineStepOperator: a DoodContainerOperator wired to a configured pipeline's step and run partition."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from dood.operators.assets import dataset_date_of, emit_model_event, events_env, input_events
from dood.operators.container import DoodContainerOperator
from dood.operators.partition import partition_from_context
from dood.operators.tracking import TracksInMlflow

if TYPE_CHECKING:
    from airflow.sdk import Context

    from dood.config.pipelines import Pipeline
    from dood.mounts.run_directories import HostDirectories

WORK_DIR = "/dood/work"
INPUT_DIR = "/dood/input"
MODELS_DIR = "/dood/models"
PROMOTE_SKIP_EXIT_CODE = 99
RUN_PARAM_NAMES = ("dataset_date", "image_tag", "gpus", "force_promote", "min_accuracy")


class PipelineStepOperator(TracksInMlflow, DoodContainerOperator):
    """Runs one step; mounts the run's partition (rw), the data root (ro) and the pipeline's model dir.

    The model dir is writable for the promote step only. Run Params reach the container as the JSON
    object ``$DOOD_PARAMS``; the ``gpus`` Param sets the train step's GPU request. With the config's
    ``tracking: mlflow:``, each task instance gets an MLflow run nested under its DAG run's (``TracksInMlflow``).
    """

    def __init__(self, *, pipeline_name: str, pipeline: Pipeline, step_name: str, **kwargs: Any) -> None:
        step = pipeline.steps[step_name]  # type: ignore[index] # dag_factory passes the config's own keys
        super().__init__(
            # An emptied form field is null: the pipeline's tag then (the tag pattern admits no quote).
            image=f"{step.image}:{{{{ params.image_tag or '{pipeline.image_tag}' }}}}",
            command=list(step.command),
            environment={**step.environment, "DOOD_PIPELINE": pipeline_name, "DOOD_STEP": step_name},
            labels={**step.labels, "dood-pipeline": pipeline_name},
            resources=step.resources,
            skip_on_exit_code=PROMOTE_SKIP_EXIT_CODE if step_name == "promote" else None,
            **kwargs,
        )
        self.pipeline_name = pipeline_name
        self.pipeline = pipeline
        self.step_name = step_name

    def execute(self, context: Context) -> Any:
        partition = partition_from_context(context)
        pipeline = self.pipeline
        work_dir = os.path.join(pipeline.artifact_root, self.pipeline_name, partition)
        models_dir = os.path.join(pipeline.model_root, self.pipeline_name)
        self._directories = (work_dir, models_dir)
        self.log.info("Run partition: %s", work_dir)
        self.mounts = [
            *self.mounts,
            {"source": work_dir, "target": WORK_DIR},
            {"source": pipeline.data_root, "target": INPUT_DIR, "read_only": True},
            {"source": models_dir, "target": MODELS_DIR, "read_only": self.step_name != "promote"},
        ]
        params = context["params"]
        run_params = {name: params[name] for name in (*pipeline.hyperparameters, *RUN_PARAM_NAMES) if name in params}
        defaults = {
            **{name: hp.default for name, hp in pipeline.hyperparameters.items()},
            "image_tag": pipeline.image_tag,
            "gpus": 0,
            "min_accuracy": pipeline.quality_gate.minimum,
            "force_promote": False,
        }
        events = input_events(context, pipeline) if pipeline.inputs else []
        if events and "dataset_date" in params and run_params.get("dataset_date") is None:
            run_params["dataset_date"] = dataset_date_of(events)  # the data that started the run, if it says
        for name, default in defaults.items():  # a field left empty in the form means its default
            if name in params and run_params.get(name) is None:
                run_params[name] = default
        dag_run = context.get("dag_run")
        run_type = getattr(dag_run, "run_type", None)
        self.environment = {
            **self.environment,
            "DOOD_PARTITION": partition,
            "DOOD_WORK_DIR": WORK_DIR,
            "DOOD_INPUT_DIR": INPUT_DIR,
            "DOOD_MODELS_DIR": MODELS_DIR,
            "DOOD_PARAMS": json.dumps(run_params, default=str),
            "DOOD_RUN_TYPE": str(getattr(run_type, "value", run_type) or ""),  # scheduled, manual, backfill...
            "DOOD_PROMOTE_FROM_BACKFILL": str(pipeline.promotion.from_backfill).lower(),
            "DOOD_PROMOTE_REQUIRE_NEWER_DATA": str(pipeline.promotion.require_newer_data).lower(),
        }
        if events and self.step_name == "prepare":
            self.log.info("Started by %d asset event(s) of its inputs: %s", len(events), events_env(events))
            self.environment["DOOD_ASSET_EVENTS"] = events_env(events)
        if self.step_name == "train" and params.get("gpus"):
            self.container_resources = self.container_resources.model_copy(update={"gpus": int(params["gpus"])})
        return self._model_event(super().execute(context), context)

    def execute_complete(self, context: Context, event: dict[str, Any], handle: dict[str, str] | None = None) -> Any:
        return self._model_event(super().execute_complete(context, event, handle), context)

    def _model_event(self, result: Any, context: Context) -> Any:
        """Promote of a pipeline with a `model_asset`: its event's extra, or skipped when it crowned nothing."""
        if self.step_name == "promote" and self.pipeline.model_asset is not None:
            metric = self.pipeline.quality_gate.metric
            emit_model_event(result, context, self.pipeline.model_asset, self.pipeline_name, metric, self.log)
        return result

    def build_spec(self, config, hook, identity, context):
        """Also tell the step where its partition and model directory are on the host, so what it records
        (the champion's source, its result) names paths a person can find, not /dood/work."""
        work_dir, models_dir = self._directories
        mount_map = hook.mount_map
        self.environment = {
            **self.environment,
            "DOOD_HOST_WORK_DIR": mount_map.to_host(work_dir, f"{self.task_id}: run partition"),
            "DOOD_HOST_MODELS_DIR": mount_map.to_host(models_dir, f"{self.task_id}: model directory"),
        }
        return super().build_spec(config, hook, identity, context)

    def prepare_directories(self, directories: HostDirectories, user: str) -> None:
        """The run's partition and the model directory belong to the steps' user; the data root (read-only
        for every step) only to trusted users. Made by dood-proxy when it is in front of the socket."""
        work_dir, models_dir = self._directories
        step = f"{self.task_id}: pipeline {self.pipeline_name}"
        directories.for_input(self.pipeline.data_root, what=f"{step}: data_root")
        directories.for_container(work_dir, user, what=f"{step}: run partition")
        directories.for_container(models_dir, user, what=f"{step}: model directory")
