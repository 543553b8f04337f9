"""MLflow runs of a DAG run and its task instances, on the Airflow side (`tracking: mlflow:` of the dood config).

One *parent* run per DAG run and one *step* run per task instance (dag, run, task, map index), nested under
it (tag `mlflow.parentRunId`), in the experiment of the DAG's pipeline. The operator creates both before the
step's container and hands the step its run (`step_environment`: $MLFLOW_RUN_ID, which MLflow's
`mlflow.start_run()` resumes); every try of a task instance gets the *same* step run (a retry continues it,
its `dood.try_number` tag moves on), so a retried training leaves one run, not two.

Nothing in MLflow is unique but an experiment's name, so runs are found again by their tags:
- the experiment: created when missing; a concurrent creation's "already exists" is read back by name;
- the parent run (tags dood.kind=dag_run, dood.dag_id, dood.run_id): looked up; created when missing; then
  looked up again. When two tasks of a run raced and both created one, the canonical one is the one with the
  smallest run id: every caller picks it, deletes the others and moves their step runs under it. Deleting
  only non-smallest runs never changes which is smallest, so callers converge; the step's end repeats the
  merge, so a step run created under a parent deleted meanwhile is moved too.
- the step run (tags dood.kind=task, dood.dag_id, dood.run_id, dood.task_id, dood.map_index): looked up,
  created when missing; a task instance runs one try at a time, so it is not raced.

MLflow's own client (`mlflow-skinny`, `pip install 'dood-airflow[mlflow]'`) does the talking; it is imported
only when tracking is configured. Its credentials come from the worker's environment
(MLFLOW_TRACKING_USERNAME...), and reach the steps only through `private_environment`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from dood.exceptions import DoodConfigError, DoodError

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from dood.config.tracking import MlflowTracking
    from dood.naming import TaskIdentity

__all__ = ["StepRun", "TrackingUnavailable", "MlflowRuns", "step_environment"]

KIND_TAG = "dood.kind"
DAG_RUN_KIND = "dag_run"
TASK_KIND = "task"
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own nesting tag (the UI nests by it)
DAG_ID_TAG, RUN_ID_TAG, TASK_ID_TAG = "dood.dag_id", "dood.run_id", "dood.task_id"
MAP_INDEX_TAG, TRY_NUMBER_TAG, STACK_TAG = "dood.map_index", "dood.try_number", "dood.stack"
PIPELINE_TAG = "dood.pipeline"


class TrackingUnavailable(DoodError):
    """The tracking server could not be used to create or find a run; raised before any container exists."""


@dataclass(frozen=True)
class StepRun:
    """Where one task instance's step logs: its experiment, its own run and the DAG run's parent run."""

    experiment_name: str
    experiment_id: str
    parent_run_id: str
    run_id: str
    model_name: str
    tags: Mapping[str, str]


def _quoted(value: str) -> str:
    """A value in an MLflow filter string (which has no escapes: a value with both quote kinds cannot be said)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise DoodConfigError(f"{value!r} holds both ' and \": MLflow's search cannot look it up; rename it")


def _filter(tags: Mapping[str, str]) -> str:
    return " and ".join(f"tags.`{key}` = {_quoted(value)}" for key, value in sorted(tags.items()))


class MlflowRuns:
    """The runs of one tracking server, as Airflow's workers reach it (`airflow_tracking_uri`)."""

    def __init__(self, settings: MlflowTracking, *, stack: str) -> None:
        self.settings = settings
        self.stack = stack

    @cached_property
    def client(self) -> MlflowClient:
        try:
            from mlflow.tracking import MlflowClient  # only when tracking is configured
        except ImportError:
            raise DoodConfigError(
                "the dood config's `tracking: mlflow:` needs MLflow's client on every Airflow worker: "
                "pip install 'dood-airflow[mlflow]' (or mlflow-skinny), or remove `tracking:`"
            ) from None
        return MlflowClient(tracking_uri=self.settings.airflow_uri)

    # --- the experiment and the runs ---

    def experiment_id(self, name: str) -> str:
        """The experiment's id, created when missing (a concurrent creation is read back by name)."""
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is None:
            try:
                return str(self.client.create_experiment(name))
            except MlflowException as exc:
                if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                    raise
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
        if found.lifecycle_stage != "active":
            raise DoodConfigError(
                f"MLflow experiment {name!r} is deleted: restore it (mlflow experiments restore --experiment-id "
                f"{found.experiment_id}) or name another in tracking.mlflow.experiment_name"
            )
        return str(found.experiment_id)

    def _search(self, experiment_id: str, tags: Mapping[str, str]) -> list[Run]:
        runs = self.client.search_runs([experiment_id], _filter(tags), max_results=1000)
        return sorted(runs, key=lambda run: run.info.run_id)

    def parent_run(
        self, experiment_id: str, dag_id: str, run_id: str, pipeline: str | None = None, *, adopt: bool = False
    ) -> str:
        """The DAG run's parent run: found by its tags, created when missing, duplicates merged (module doc);
        `adopt` moves every step run of the DAG run under it even when no duplicate is seen now."""
        key = {KIND_TAG: DAG_RUN_KIND, DAG_ID_TAG: dag_id, RUN_ID_TAG: run_id}
        found = self._search(experiment_id, key)
        if not found:
            tags = {**key, STACK_TAG: self.stack, **({PIPELINE_TAG: pipeline} if pipeline else {})}
            self.client.create_run(experiment_id, tags=tags, run_name=run_id)
            found = self._search(experiment_id, key)
        canonical = found[0].info.run_id
        for duplicate in found[1:]:  # never the smallest: every caller keeps the same one
            self._delete(duplicate.info.run_id)
        if len(found) > 1 or adopt:
            self._adopt_steps(experiment_id, dag_id, run_id, canonical)
        return canonical

    def _delete(self, run_id: str) -> None:
        from mlflow.exceptions import MlflowException

        with contextlib.suppress(MlflowException):  # another caller deleted it first
            self.client.delete_run(run_id)

    def _adopt_steps(self, experiment_id: str, dag_id: str, run_id: str, canonical: str) -> None:
        """Move every step run of the DAG run under the canonical parent."""
        steps = self._search(experiment_id, {KIND_TAG: TASK_KIND, DAG_ID_TAG: dag_id, RUN_ID_TAG: run_id})
        for step in steps:
            if step.data.tags.get(PARENT_TAG) != canonical:
                self.client.set_tag(step.info.run_id, PARENT_TAG, canonical)

    def step_run(self, experiment_id: str, parent_run_id: str, identity: TaskIdentity) -> tuple[str, dict[str, str]]:
        """The task instance's run (every try's: a retry continues it), under the parent; (run id, its tags)."""
        key = {
            KIND_TAG: TASK_KIND,
            DAG_ID_TAG: identity.dag_id,
            RUN_ID_TAG: identity.run_id,
            TASK_ID_TAG: identity.task_id,
            MAP_INDEX_TAG: str(identity.map_index),
        }
        tags = {**key, TRY_NUMBER_TAG: str(identity.try_number), STACK_TAG: self.stack, PARENT_TAG: parent_run_id}
        found = self._search(experiment_id, key)
        if found:
            run_id = found[0].info.run_id
            for name, value in tags.items():
                if found[0].data.tags.get(name) != value:
                    self.client.set_tag(run_id, name, value)
            self.client.update_run(run_id, status="RUNNING")
            return run_id, tags
        name = identity.task_id if identity.map_index < 0 else f"{identity.task_id}[{identity.map_index}]"
        run = self.client.create_run(experiment_id, tags=tags, run_name=name)
        return run.info.run_id, tags

    # --- what the operator calls ---

    def start(self, identity: TaskIdentity, pipeline: str | None) -> StepRun:
        """Before the step's container: its experiment, the DAG run's parent run and its own run."""
        experiment, model = self.settings.names(pipeline=pipeline, dag_id=identity.dag_id, stack=self.stack)
        try:
            experiment_id = self.experiment_id(experiment)
            parent = self.parent_run(experiment_id, identity.dag_id, identity.run_id, pipeline)
            run_id, tags = self.step_run(experiment_id, parent, identity)
            # a racing task's parent may have won meanwhile: look again, moving this step run under it
            parent = self.parent_run(experiment_id, identity.dag_id, identity.run_id, pipeline, adopt=True)
            tags[PARENT_TAG] = parent
            self.client.update_run(parent, status="RUNNING")
        except DoodError:
            raise
        except Exception as exc:
            raise TrackingUnavailable(
                f"{identity.task_id}: MLflow at {self.settings.airflow_uri} could not give this step its run "
                f"(experiment {experiment!r}): {type(exc).__name__}: {exc}. Start the tracking server (or fix "
                "tracking.mlflow in the dood config), or remove `tracking:` to run untracked."
            ) from exc
        return StepRun(experiment, experiment_id, parent, run_id, model, tags)

    def end(self, identity: TaskIdentity, pipeline: str | None, *, status: str, last: bool) -> None:
        """After the step's container ended (FINISHED, FAILED, KILLED): its run ends so; the parent run ends
        FAILED with a failed step, FINISHED after the DAG's last step. Finds the runs again (a resumed
        deferrable task is another process), and repeats the parent merge."""
        experiment, _ = self.settings.names(pipeline=pipeline, dag_id=identity.dag_id, stack=self.stack)
        experiment_id = self.experiment_id(experiment)
        parent = self.parent_run(experiment_id, identity.dag_id, identity.run_id, pipeline, adopt=True)
        run_id, _ = self.step_run(experiment_id, parent, identity)
        self.client.set_terminated(run_id, status=status)
        if status != "FINISHED":
            self.client.set_terminated(parent, status="FAILED")
        elif last:
            self.client.set_terminated(parent, status="FINISHED")


def step_environment(
    step: StepRun, settings: MlflowTracking, environ: Mapping[str, str] | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """(environment, private environment) of a step's container: where and in which run it logs, and the
    credentials of the worker's environment (`credentials_env`), which are never rendered."""
    environ = os.environ if environ is None else environ
    public = {
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "MLFLOW_EXPERIMENT_NAME": step.experiment_name,
        "MLFLOW_RUN_ID": step.run_id,  # mlflow.start_run() resumes it
        "MLFLOW_PARENT_RUN_ID": step.parent_run_id,
        # the dood tags, for any further run the step starts itself (MLflow adds them to new runs)
        "MLFLOW_RUN_CONTEXT": json.dumps(dict(step.tags), sort_keys=True),
        "DOOD_MLFLOW_REGISTER_MODELS": str(settings.register_models).lower(),
        "DOOD_MLFLOW_MODEL_NAME": step.model_name,
    }
    private = {name: environ[name] for name in settings.credentials_env if environ.get(name)}
    return public, private


def end_status(exc: BaseException | None) -> str:
    """The MLflow status a step's run ends with: FINISHED (success, or a skip), KILLED, else FAILED."""
    if exc is None:
        return "FINISHED"
    if isinstance(exc, (SystemExit, KeyboardInterrupt)):  # the task was killed (mark failed, clear)
        return "KILLED"
    from airflow.sdk.exceptions import AirflowSkipException  # Airflow only where it runs

    return "FINISHED" if isinstance(exc, AirflowSkipException) else "FAILED"
