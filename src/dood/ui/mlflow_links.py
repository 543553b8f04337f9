"""Links from the Container tab (a step's run) and the Model metrics tab (a DAG run's parent run) to MLflow's UI.

The ids come from Airflow's database like the tabs' other data: the operator pushes the XCom `mlflow`
(`{experiment_id, experiment_name, run_id, parent_run_id}`, `dood.operators.tracking`) when it gives a try its
run; MLflow itself is never asked. The base address is `tracking.mlflow.ui_url` of the dood config (MLflow's UI
as the users' browsers reach it, http(s) only, checked by `dood.config.tracking`); without it the tabs show the
run ids as text and say which setting gives links. Ids are checked against what MLflow makes (letters, digits,
`-`, `_`) and quoted: an XCom a DAG author pushed by hand never becomes anything but a plain link.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from dood.ui.rows import TaskKey

__all__ = ["XCOM_KEY", "MlflowLinks", "MlflowRun", "parent_runs", "step_run", "tracking_ui"]

#: The XCom the operator pushes (`dood.operators.tracking.XCOM_KEY`; a unit test pins both).
XCOM_KEY = "mlflow"
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_RUNS = 1000


@dataclass(frozen=True)
class MlflowRun:
    """Where one task instance logs: its experiment, its run and the DAG run's parent run."""

    experiment_id: str
    run_id: str
    parent_run_id: str | None
    experiment_name: str = ""

    @classmethod
    def from_xcom(cls, value: Any) -> MlflowRun | None:
        """The XCom's value, or None when it is not what the operator pushes."""
        if not isinstance(value, dict):
            return None
        experiment, run, parent = value.get("experiment_id"), value.get("run_id"), value.get("parent_run_id")
        if not all(isinstance(v, str) and _ID.fullmatch(v) for v in (experiment, run)):
            return None
        if parent is not None and not (isinstance(parent, str) and _ID.fullmatch(parent)):
            parent = None
        name = value.get("experiment_name")
        return cls(str(experiment), str(run), parent, name[:250] if isinstance(name, str) else "")


@dataclass(frozen=True)
class MlflowLinks:
    """What a tab shows: the run, and links to MLflow's UI when its address is configured."""

    run: MlflowRun
    ui_url: str | None

    @property
    def run_url(self) -> str | None:
        return self._url(self.run.run_id)

    @property
    def parent_url(self) -> str | None:
        return self._url(self.run.parent_run_id) if self.run.parent_run_id else None

    @property
    def experiment_url(self) -> str | None:
        return f"{self.ui_url}/#/experiments/{quote(self.run.experiment_id, safe='')}" if self._base_ok() else None

    def _url(self, run_id: str | None) -> str | None:
        if not run_id or not self._base_ok():
            return None
        return f"{self.experiment_url}/runs/{quote(run_id, safe='')}"

    def _base_ok(self) -> bool:
        """http(s) only (the config checks it; checked again where it becomes a link)."""
        return bool(self.ui_url) and urlsplit(self.ui_url or "").scheme in ("http", "https")


def tracking_ui() -> tuple[bool, str | None]:
    """(whether the dood config tracks runs in MLflow, MLflow's UI address for the browser)."""
    from dood.config.model import load_config

    settings = load_config().tracking.mlflow
    return (settings is not None, settings.ui_url if settings is not None else None)


def step_run(task: TaskKey) -> MlflowRun | None:
    """The task instance's MLflow run, from its XCom `mlflow`."""
    from dood.ui.task_states import task_xcom

    value = task_xcom(task, XCOM_KEY)
    return MlflowRun.from_xcom(value) if value is not None else None


def parent_runs(dag_id: str) -> dict[str, MlflowRun]:
    """Each DAG run's MLflow runs (one of its tasks' XCom `mlflow`: they share the parent run), by run id."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from dood.ui.task_states import stored_xcom

    found: dict[str, MlflowRun] = {}
    with create_session() as session:
        rows = session.execute(
            select(XComModel.run_id, XComModel.value)
            .where(XComModel.dag_id == dag_id, XComModel.key == XCOM_KEY)
            .order_by(XComModel.timestamp.desc())
            .limit(20 * MAX_RUNS)
        )
        for run_id, raw in rows:
            if run_id in found:
                continue
            run = MlflowRun.from_xcom(stored_xcom(raw))
            if run is not None and run.parent_run_id:
                found[run_id] = run
    return found
