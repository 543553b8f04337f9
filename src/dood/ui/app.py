"""The FastAPI app the plugin mounts at `/dood` on Airflow's api-server, and what the UI shows of it."""

from __future__ import annotations

from fastapi import FastAPI

from dood.ui.links import CONTAINER_TAB, METRICS_TAB, NAV_PAGE, URL_PREFIX


def create_app() -> FastAPI:
    from dood.ui.routes import router

    app = FastAPI(title="dood", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(router)
    return app


def fastapi_apps() -> list[dict]:
    return [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "dood"}]


def external_views() -> list[dict]:
    """The nav page and the two tabs; Airflow's UI fills `{DAG_ID}`, `{RUN_ID}`, `{TASK_ID}`, `{MAP_INDEX}`."""
    return [
        {"name": "DooD", "href": f"{URL_PREFIX}/containers", "destination": "nav", "url_route": NAV_PAGE},
        {
            "name": "Container",
            "href": f"{URL_PREFIX}/dags/{{DAG_ID}}/runs/{{RUN_ID}}/tasks/{{TASK_ID}}/container?map_index={{MAP_INDEX}}",
            "destination": "task_instance",
            "url_route": CONTAINER_TAB,
        },
        {
            "name": "Model metrics",
            "href": f"{URL_PREFIX}/dags/{{DAG_ID}}/metrics",
            "destination": "dag",
            "url_route": METRICS_TAB,
        },
    ]
