"""TracksInMlflow: the operator's half of `dood.lifecycle.mlflow_runs` (the dood config's `tracking: mlflow:`).

Mixed in before `DoodContainerOperator` (as `PipelineStepOperator` does): before a new container is built it
gives the task instance its MLflow run, nested under its DAG run's, and hands the step where to log
(`dood.lifecycle.mlflow_runs.step_environment`: public variables in the environment, credentials in the
private one); when the container has ended (however the task waited: blocking, deferred, adopted) it ends the
run with the step's outcome. Without `tracking:` in the config it does nothing, and MLflow is never imported.

It also pushes the XCom `mlflow` (`{experiment_id, experiment_name, run_id, parent_run_id}`) when it gives a try
its run: the Airflow UI (`dood.ui.mlflow_links`) reads it to link the task and its DAG run to their MLflow runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dood.lifecycle.mlflow_runs import MlflowRuns, StepRun, end_status, step_environment

if TYPE_CHECKING:
    from airflow.sdk import Context

    from dood.config.model import DoodConfig
    from dood.hooks.dood import DoodHook
    from dood.naming import TaskIdentity


#: The XCom holding a task instance's MLflow run (`dood.ui.mlflow_links.XCOM_KEY` reads it; a test pins both).
XCOM_KEY = "mlflow"


class TracksInMlflow:
    """Gives each task instance an MLflow run when the dood config has `tracking: mlflow:` (module doc)."""

    # what DoodContainerOperator has (declared for the type checker)
    environment: dict[str, str]
    private_environment: dict[str, str]
    _identity: TaskIdentity | None

    @property
    def _op(self) -> Any:
        """This operator, for what BaseOperator gives it (log, task_id, downstream_task_ids)."""
        return self

    def _mlflow_runs(self, config: DoodConfig) -> MlflowRuns | None:
        settings = config.tracking.mlflow
        return MlflowRuns(settings, stack=config.stack) if settings is not None else None

    def _tracked_pipeline(self) -> str | None:
        return getattr(self, "pipeline_name", None)

    def build_spec(self, config: DoodConfig, hook: DoodHook, identity: TaskIdentity, context: Context) -> Any:
        runs = self._mlflow_runs(config)
        if runs is not None:
            step = runs.start(identity, self._tracked_pipeline())
            public, private = step_environment(step, runs.settings)
            self.environment = {**self.environment, **public}
            self.private_environment = {**self.private_environment, **private}
            self._push_run(context, step)
            self._op.log.info(
                "MLflow: experiment %r, run %s nested under the DAG run's %s (%s)%s",
                step.experiment_name,
                step.run_id,
                step.parent_run_id,
                runs.settings.tracking_uri,
                f"; credentials from {', '.join(sorted(private))} (private)" if private else "",
            )
        return super().build_spec(config, hook, identity, context)  # type: ignore[misc]

    def _adopted(self, config: DoodConfig, identity: TaskIdentity, context: Context) -> None:
        """An adopted container already runs with its step run (the earlier try's): find that run again (its try
        tag moves on) and push the XCom, so this try's Container tab links it too. MLflow out of reach must not
        fail a try whose container runs: said in the task log instead."""
        super()._adopted(config, identity, context)  # type: ignore[misc]
        runs = self._mlflow_runs(config)
        if runs is None:
            return
        try:
            step = runs.start(identity, self._tracked_pipeline())
        except Exception as exc:  # noqa: BLE001 - any MLflow failure: the container runs on, unlinked
            self._op.log.warning("MLflow: the adopted container's run could not be looked up (%s): not linked", exc)
            return
        self._push_run(context, step)

    @staticmethod
    def _push_run(context: Context, step: StepRun) -> None:
        context["ti"].xcom_push(
            key=XCOM_KEY,
            value={
                "experiment_id": step.experiment_id,
                "experiment_name": step.experiment_name,
                "run_id": step.run_id,
                "parent_run_id": step.parent_run_id,
            },
        )

    def _finish(self, handle: Any, config: DoodConfig, **kwargs: Any) -> Any:
        try:
            value = super()._finish(handle, config, **kwargs)  # type: ignore[misc]
        except BaseException as exc:
            self._end_tracked_run(config, exc)
            raise
        self._end_tracked_run(config, None)
        return value

    def _end_tracked_run(self, config: DoodConfig, exc: BaseException | None) -> None:
        runs = self._mlflow_runs(config)
        identity = self._identity
        if runs is None or identity is None:
            return
        status = end_status(exc)
        try:
            runs.end(
                identity,
                self._tracked_pipeline(),
                status=status,
                last=not self._op.downstream_task_ids,
            )
        except Exception as error:  # noqa: BLE001 - the task's outcome is the container's, not the tracker's
            self._op.log.warning("MLflow: could not end this step's run (%s): %s", status, error)
