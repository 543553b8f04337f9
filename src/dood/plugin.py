"""Airflow plugin registration (entry point `airflow.plugins`), so `airflow plugins` lists dood, and its UI:
the DooD page, the Container and Model metrics tabs (`dood.ui`)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


class _Lazy:
    """Built on first access: only the api-server mounts the app; other processes never import it."""

    def __init__(self, factory) -> None:
        self.factory = factory
        self.value = None

    def __get__(self, instance, owner):
        if self.value is None:
            self.value = self.factory()
        return self.value


def _fastapi_apps() -> list[dict]:
    from dood.ui.app import fastapi_apps

    return fastapi_apps()


def _external_views() -> list[dict]:
    from dood.ui.app import external_views

    return external_views()


class DoodPlugin(AirflowPlugin):
    name = "dood"
    fastapi_apps = _Lazy(_fastapi_apps)
    external_views = _Lazy(_external_views)
