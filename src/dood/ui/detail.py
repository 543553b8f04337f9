"""The Container tab's data: the container of one task instance try, its log tail and its result."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from dood.naming import MANAGED_LABEL
from dood.ui.checkpoint import CheckpointView, checkpoint_view, host_path_of, xcom_host_path
from dood.ui.every_host import Engines
from dood.ui.mlflow_links import MlflowLinks, step_run, tracking_ui
from dood.ui.problems import why
from dood.ui.reader import LOG_TAIL_LINES
from dood.ui.rows import TaskKey
from dood.ui.samples import Usage, gpus_held

log = logging.getLogger(__name__)
RESULT_CHARS = 64 * 1024


@dataclass
class Detail:
    task: TaskKey
    tries: list[int]
    try_number: int | None
    inspected: dict[str, Any] | None
    gpus: int | str | None = None
    usage: Usage | None = None
    log_lines: tuple[str, ...] = ()
    log_error: str | None = None
    result: str | None = None
    result_source: str | None = None
    result_error: str | None = None
    log_limit: int = LOG_TAIL_LINES
    checkpoint: CheckpointView | None = None
    tracked: bool = False  # the dood config tracks runs in MLflow
    mlflow: MlflowLinks | None = None


def tries_of(reader: Engines, task: TaskKey) -> dict[int, dict[str, Any]]:
    """The containers of every try of this task instance still on the host, by try number."""
    labels = {
        MANAGED_LABEL: "true",
        "dood.dag_id": task.dag_id,
        "dood.run_id": task.run_id,
        "dood.task_id": task.task_id,
        "dood.map_index": str(task.map_index),
    }
    listed = reader.find({"label": [f"{k}={v}" for k, v in labels.items()]})
    found = {}
    for entry in listed:
        try:
            found[int((entry.get("Labels") or {}).get("dood.try_number", "0"))] = entry
        except ValueError:
            continue
    return found


def detail(reader: Engines, task: TaskKey, try_number: int | None, *, may_read_logs: bool) -> Detail:
    found = tries_of(reader, task)
    chosen = try_number if try_number is not None else (max(found) if found else None)
    entry = found.get(chosen) if chosen is not None else None
    inspected = reader.inspect(entry["Id"], entry.get("State", "")) if entry else None
    view = Detail(task=task, tries=sorted(found), try_number=chosen, inspected=inspected)
    if inspected is None:
        return view
    view.gpus = gpus_held(inspected.get("HostConfig"))
    if (inspected.get("State") or {}).get("Running"):
        # One container: worth waiting for the daemon's next stats tick (shared with the DooD page's samples).
        view.usage = reader.usage_many([inspected["Id"]], budget=1.5).get(inspected["Id"])
    if may_read_logs:
        try:
            view.log_lines = tuple(reader.log_tail(inspected["Id"]))
        except Exception as exc:  # noqa: BLE001 - the tab renders and says why there is no output
            log.warning("dood UI: no output of %s: %s", inspected["Id"][:12], exc)  # raw text: the log only
            reason = why(exc)
            view.log_error = f"The Docker engine did not give the output{f' ({reason})' if reason else ''}."
    else:
        view.log_error = "You may not read this DAG's task logs."
    return view


_SURROGATE = re.compile("[\ud800-\udfff]")


def result_text(value: Any) -> str | None:
    """A result, as the page shows it: pretty JSON, bounded, its text as text (`é`, `𝐱`, not `\\u00e9`),
    with what would act on the page rather than show made visible (bidi overrides as `<U+202E>`, C1
    controls; `dood.lifecycle.logs.inert`) and a lone surrogate, which no page can carry, as `<U+D835>`."""
    from dood.lifecycle.logs import inert

    if value is None:
        return None
    text = json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)
    text = _SURROGATE.sub(lambda m: f"<U+{ord(m[0]):04X}>", text)
    text = "\n".join(inert(line) for line in text.split("\n"))  # JSON escapes C0 itself: no CR is left
    return text if len(text) <= RESULT_CHARS else text[:RESULT_CHARS] + "\n… (cut)"


def run_dir_result(container_name: str) -> Any:
    """The result file the container wrote into its run directory, when this process sees that directory."""
    from dood.config.model import load_config
    from dood.lifecycle.results import read_result, run_dir_for

    config = load_config()
    return read_result(run_dir_for(config.runs_root, container_name), config.max_result_bytes)


def xcom_result(task: TaskKey) -> Any:
    """The task instance's return value (what the result file became), from Airflow's database."""
    from dood.ui.task_states import task_xcom

    return task_xcom(task, "return_value")


def attach_result(view: Detail, *, may_read_xcom: bool) -> None:
    """The result JSON: the run directory's file first (the container's own), else the task's XCom."""
    name = ((view.inspected or {}).get("Name") or "").lstrip("/")
    if name:
        try:
            value = run_dir_result(name)
        except Exception as exc:  # noqa: BLE001 - the tab renders and says why there is no result
            view.result_error = str(exc)
            value = None
        if value is not None:
            view.result, view.result_source = result_text(value), "the run directory's result.json"
            return
    if not may_read_xcom:
        return
    try:
        value = xcom_result(view.task)
    except Exception as exc:  # noqa: BLE001 - the tab renders and says why there is no result
        view.result_error = str(exc)
        return
    if value is not None:
        view.result, view.result_source = result_text(value), "the task's XCom (return_value)"


def attach_checkpoint(view: Detail, *, may_read_xcom: bool) -> None:
    """The checkpoint the container mounts (or, once it is gone, the one its XCom names) and what it holds."""
    host_path = host_path_of(view.inspected)
    if host_path is None and may_read_xcom:
        try:
            host_path = xcom_host_path(view.task)
        except Exception as exc:  # noqa: BLE001 - the tab renders without it
            log.warning("dood UI: no checkpoint XCom of %s: %s", view.task, exc)
    if host_path is not None:
        view.checkpoint = checkpoint_view(host_path)


def attach_mlflow(view: Detail, *, may_read_xcom: bool) -> None:
    """The step's MLflow run and its DAG run's parent run, when the dood config tracks runs."""
    view.tracked, ui_url = tracking_ui()
    if not view.tracked or not may_read_xcom:
        return
    try:
        run = step_run(view.task)
    except Exception as exc:  # noqa: BLE001 - the tab renders without it
        log.warning("dood UI: no MLflow XCom of %s: %s", view.task, exc)
        return
    view.mlflow = MlflowLinks(run, ui_url) if run is not None else None
