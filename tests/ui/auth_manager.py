"""Airflow's SimpleAuthManager with one DAG-level rule, for the UI tests: the user `outsider` (role viewer)
may read every DAG but those whose id contains `secret`. SimpleAuthManager's roles are not DAG-level."""

from __future__ import annotations

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

OUTSIDER = "outsider"


class DagRestrictedAuthManager(SimpleAuthManager):
    def is_authorized_dag(self, *, method, user, access_entity=None, details=None) -> bool:
        if user.username == OUTSIDER and details is not None and "secret" in (details.id or ""):
            return False
        return super().is_authorized_dag(method=method, user=user, access_entity=access_entity, details=details)
