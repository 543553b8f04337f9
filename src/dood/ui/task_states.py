"""Task instance states for containers' labels, from Airflow's metadata database (the api-server has it).

A handed-off container's key (`TaskKey.handoff`: label ``dood.handoff``) gets its waiters' and its DAG
run's states too (`HandedOff`), so the page applies the janitor's whole rule (`dood.janitor.running_ownership`).
"""

from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

from dood.lifecycle.handoff import waiters
from dood.lifecycle.owning_try import NO_TASK_INSTANCE as MISSING
from dood.ui.rows import HandedOff, TaskKey


def task_states(keys: Iterable[TaskKey]) -> dict[TaskKey, str | HandedOff]:
    """Current state of each task instance; `MISSING` (the janitor's marker) when it does not exist; a
    `HandedOff` for a handed-off container's key."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    wanted = set(keys)
    if not wanted:
        return {}
    found: dict[tuple[str, str, str, int], str] = {}
    runs: dict[tuple[str, str], str] = {}
    with create_session() as session:
        rows = session.execute(
            select(
                TaskInstance.dag_id,
                TaskInstance.run_id,
                TaskInstance.task_id,
                TaskInstance.map_index,
                TaskInstance.state,
            ).where(
                TaskInstance.dag_id.in_({k.dag_id for k in wanted}),
                TaskInstance.run_id.in_({k.run_id for k in wanted}),
            )
        )
        for dag_id, run_id, task_id, map_index, state in rows:  # every task of these runs: waiters included
            found[(dag_id, run_id, task_id, map_index)] = _text(state) if state else "none"
        handed = [key for key in wanted if key.handoff is not None]
        if handed:
            for dag_id, run_id, state in session.execute(
                select(DagRun.dag_id, DagRun.run_id, DagRun.state).where(
                    DagRun.dag_id.in_({k.dag_id for k in handed}), DagRun.run_id.in_({k.run_id for k in handed})
                )
            ):
                runs[(dag_id, run_id)] = _text(state)

    def state_of(key: TaskKey, task_id: str | None = None) -> str:
        return found.get((key.dag_id, key.run_id, task_id or key.task_id, key.map_index), MISSING)

    states: dict[TaskKey, str | HandedOff] = {}
    for key in wanted:
        if key.handoff is None:
            states[key] = state_of(key)
        else:
            named = waiters(key.labels()) or ()
            states[key] = HandedOff(
                state_of(key),
                {waiter: state_of(key, waiter) for waiter in named},
                runs.get((key.dag_id, key.run_id), MISSING),
            )
    return states


def task_xcom(task: TaskKey, key: str) -> Any:
    """One XCom of a task instance, deserialized as Airflow stores it; None when it was never pushed. The one
    read the Container tab's result, checkpoint and MLflow sections share."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        raw = session.scalar(
            select(XComModel.value).where(
                XComModel.dag_id == task.dag_id,
                XComModel.run_id == task.run_id,
                XComModel.task_id == task.task_id,
                XComModel.map_index == task.map_index,
                XComModel.key == key,
            )
        )
    return stored_xcom(raw) if raw is not None else None


def stored_xcom(raw: Any) -> Any:
    """A value of the xcom table's `value` column, deserialized (`XComModel.deserialize_value` reads `.value`)."""
    from airflow.models.xcom import XComModel

    return XComModel.deserialize_value(SimpleNamespace(value=raw))


def _text(state: object) -> str:
    return str(getattr(state, "value", state))
