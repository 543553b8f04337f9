"""Task instance states for containers' labels, from Airflow's metadata database (the api-server has it)."""

from __future__ import annotations

from collections.abc import Iterable

from dood.janitor import MISSING
from dood.ui.rows import TaskKey


def task_states(keys: Iterable[TaskKey]) -> dict[TaskKey, str]:
    """Current state of each task instance; `MISSING` (the janitor's marker) when it does not exist."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    wanted = set(keys)
    if not wanted:
        return {}
    found: dict[TaskKey, str] = {}
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
        for dag_id, run_id, task_id, map_index, state in rows:
            key = TaskKey(dag_id, run_id, task_id, map_index)
            if key in wanted:
                found[key] = str(state.value if hasattr(state, "value") else state) if state else "none"
    return {key: found.get(key, MISSING) for key in wanted}
