"""Airflow's own login and DAG-level permissions for every endpoint of the plugin.

Plugin FastAPI apps are not protected by Airflow: each route depends on `signed_in` (the api-server's auth
manager reads the session cookie or a bearer token: no login -> 401, a bad token -> 403), and DAG-scoped
routes on `dag_access(entity)`; the container list is narrowed to the DAGs the user may read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated

from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.core_api.security import get_user
from fastapi import Depends, HTTPException, Request, status

SignedIn = Annotated[BaseUser, Depends(get_user)]


def _auth_manager():
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager()


def _team_names(dag_ids: Iterable[str]) -> dict[str, str | None]:
    from airflow.configuration import conf

    if not conf.getboolean("core", "multi_team", fallback=False):
        return {}
    from airflow.models.dag import DagModel

    return DagModel.get_dag_id_to_team_name_mapping(list(dag_ids))


def may_read(user: BaseUser, dag_id: str, entity: str | None = None) -> bool:
    """Whether the auth manager lets `user` read this DAG (or, with `entity`, its task instances, logs, XComs)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    return _auth_manager().is_authorized_dag(
        method="GET",
        access_entity=DagAccessEntity[entity] if entity else None,
        details=DagDetails(id=dag_id, team_name=_team_names([dag_id]).get(dag_id)),
        user=user,
    )


def readable(user: BaseUser, dag_ids: Iterable[str], entity: str = "TASK_INSTANCE") -> set[str]:
    """Which of these DAGs (from containers' labels, so possibly unknown to Airflow) the user may read."""
    return {dag_id for dag_id in set(dag_ids) if may_read(user, dag_id, entity)}


def dag_access(entity: str | None = None) -> Callable[[Request, BaseUser], None]:
    """A route dependency: 403 unless the user may read the path's `dag_id` (and `entity` of it)."""

    def check(request: Request, user: SignedIn) -> None:
        dag_id = request.path_params.get("dag_id") or ""
        if not may_read(user, dag_id, entity):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"You may not read {entity or 'DAG'} of this DAG")

    return check
