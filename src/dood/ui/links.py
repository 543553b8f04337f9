"""URLs into Airflow's UI and into the plugin's own pages, under the api-server's base path."""

from __future__ import annotations

from functools import cache
from urllib.parse import quote, urlencode, urlsplit

URL_PREFIX = "/dood"
CONTAINER_TAB = "dood-container"
METRICS_TAB = "dood-metrics"
NAV_PAGE = "dood"


@cache
def base_path() -> str:
    """The path part of `[api] base_url` ('' at the root)."""
    from airflow.configuration import conf

    return urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


def _q(value: str) -> str:
    return quote(str(value), safe="")


def task_instance(dag_id: str, run_id: str, task_id: str, map_index: int = -1, try_number: int | None = None) -> str:
    """The task instance's page in Airflow's UI."""
    url = f"{base_path()}/dags/{_q(dag_id)}/runs/{_q(run_id)}/tasks/{_q(task_id)}"
    if map_index >= 0:
        url += f"/mapped/{map_index}"
    return url + (f"?try_number={try_number}" if try_number else "")


def container_tab(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    """The "Container" tab of that task instance in Airflow's UI."""
    return task_instance(dag_id, run_id, task_id, map_index).split("?")[0] + f"/plugin/{CONTAINER_TAB}"


def dag_run(dag_id: str, run_id: str) -> str:
    return f"{base_path()}/dags/{_q(dag_id)}/runs/{_q(run_id)}"


def container_view(dag_id: str, run_id: str, task_id: str, map_index: int = -1, try_number: int | None = None) -> str:
    """The plugin's own container page (what the tab shows)."""
    query = {"map_index": map_index, **({"try_number": try_number} if try_number else {})}
    return f"{base_path()}{URL_PREFIX}/dags/{_q(dag_id)}/runs/{_q(run_id)}/tasks/{_q(task_id)}/container?" + urlencode(
        query
    )


def static(name: str) -> str:
    return f"{base_path()}{URL_PREFIX}/static/{name}"
