"""The "Container" button on DoodContainerOperator tasks: a link to the task instance's Container tab.

Airflow 3 evaluates extra links on the worker when the task ends and keeps the URL in XCom, so the URL is
absolute against `[api] base_url` when it is set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink

from dood.ui import links

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


class DoodContainerLink(BaseOperatorLink):
    name = "Container"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.configuration import conf

        base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
        path = links.container_tab(ti_key.dag_id, ti_key.run_id, ti_key.task_id, ti_key.map_index)
        path = path[len(links.base_path()) :]  # base_url carries the base path already
        return f"{base}{path}"
