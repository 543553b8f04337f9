"""The plugin's endpoints. Every one needs Airflow's login; DAG-scoped ones the DAG's read permission."""

from __future__ import annotations

from pathlib import Path
from time import perf_counter
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from markupsafe import Markup

from dood.ui import access
from dood.ui.access import SignedIn
from dood.ui.chart import svg
from dood.ui.detail import attach_checkpoint, attach_mlflow, attach_result, detail
from dood.ui.every_host import engines
from dood.ui.metrics import quality_gate, run_metrics
from dood.ui.mlflow_links import MlflowLinks, parent_runs, tracking_ui
from dood.ui.overview import overview
from dood.ui.render import page
from dood.ui.rows import STATES, TaskKey
from dood.ui.workers import celery_workers

STATIC = Path(__file__).parent / "static"
STATIC_FILES = {"dood.css": "text/css", "dood.js": "text/javascript"}
REFRESH_SECONDS = 5
NO_STORE = {"Cache-Control": "no-store"}

router = APIRouter()


@router.get("/static/{name}", include_in_schema=False)
def static(name: str, user: SignedIn) -> FileResponse:
    if name not in STATIC_FILES:
        raise HTTPException(404, "Not found")
    return FileResponse(STATIC / name, media_type=STATIC_FILES[name])


@router.get("/containers", response_class=HTMLResponse)
def containers_page(
    user: SignedIn,
    dag_id: Annotated[str | None, Query(max_length=250)] = None,
    state: Annotated[str | None, Query(max_length=20)] = None,
    fragment: bool = False,
) -> HTMLResponse:
    """The DooD page (nav): every dood container of the DAGs the user may read."""
    found = overview(engines(), user, dag_id=dag_id or None, state=state or None, workers=celery_workers())
    context = dict(
        rows=found.rows,
        summary=found.summary,
        now=found.now,
        elapsed_ms=found.elapsed_ms,
        dag_ids=found.dag_ids,
        dag_id=dag_id or "",
        state=state or "",
        states=(*STATES, "orphan"),
        refresh_seconds=REFRESH_SECONDS,
    )
    template = "_containers_live.html" if fragment else "containers.html"
    started = perf_counter()
    body = page(template, **context)
    timing = {**found.phases, "render": (perf_counter() - started) * 1000, "total": found.elapsed_ms}
    timing["total"] += timing["render"]
    return HTMLResponse(body, headers={**NO_STORE, "Server-Timing": server_timing(timing)})


def server_timing(phases: dict[str, float]) -> str:
    """The `Server-Timing` header of a page: where its time went, in the browser's network panel."""
    return ", ".join(f"{name};dur={ms:.1f}" for name, ms in phases.items())


@router.get("/api/containers")
def containers_json(
    user: SignedIn,
    dag_id: Annotated[str | None, Query(max_length=250)] = None,
    state: Annotated[str | None, Query(max_length=20)] = None,
) -> JSONResponse:
    """The same list as JSON."""
    found = overview(engines(), user, dag_id=dag_id or None, state=state or None, workers=celery_workers())
    summary = {k: v for k, v in vars(found.summary).items()}
    summary["stranded"] = [{**vars(s), "said": s.said()} for s in found.summary.stranded]
    body = {"containers": [row.as_json() for row in found.rows], "summary": summary, "elapsed_ms": found.elapsed_ms}
    return JSONResponse(body, headers=NO_STORE)


def _map_index(value: str | None) -> int:
    """`{MAP_INDEX}` is left as is by Airflow's UI for unmapped tasks: anything not a number means -1."""
    try:
        return int(value) if value is not None else -1
    except ValueError:
        return -1


@router.get(
    "/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/container",
    response_class=HTMLResponse,
    dependencies=[Depends(access.dag_access("TASK_INSTANCE"))],
)
def container_page(
    dag_id: str,
    run_id: str,
    task_id: str,
    user: SignedIn,
    map_index: str | None = None,
    try_number: Annotated[int | None, Query(ge=1)] = None,
) -> HTMLResponse:
    """The Container tab (task instance): that try's container, output tail and result."""
    task = TaskKey(dag_id, run_id, task_id, _map_index(map_index))
    view = detail(engines(), task, try_number, may_read_logs=access.may_read(user, dag_id, "TASK_LOGS"))
    may_read_xcom = access.may_read(user, dag_id, "XCOM")
    attach_result(view, may_read_xcom=may_read_xcom)
    attach_checkpoint(view, may_read_xcom=may_read_xcom)
    attach_mlflow(view, may_read_xcom=may_read_xcom)
    return HTMLResponse(page("container.html", **vars(view)), headers=NO_STORE)


@router.get(
    "/dags/{dag_id}/metrics",
    response_class=HTMLResponse,
    dependencies=[Depends(access.dag_access("XCOM"))],
)
def metrics_page(dag_id: str, user: SignedIn, metric: Annotated[str | None, Query(max_length=100)] = None):
    """The Model metrics tab (DAG): evaluate's metrics per run, the quality gate, the champion promotions."""
    gate = quality_gate(dag_id)
    if gate is None:
        return HTMLResponse(page("metrics.html", dag_id=dag_id, gate=None), headers=NO_STORE)
    runs = run_metrics(dag_id)
    names = sorted({name for run in runs for name in run.values} - {gate.metric})
    metric_names = [gate.metric, *names]
    chosen = metric if metric in metric_names else gate.metric
    threshold = gate.minimum if chosen == gate.metric else None
    points = sum(1 for run in runs if chosen in run.values and run.when is not None)
    tracked, ui_url = tracking_ui()
    mlflow = {run_id: MlflowLinks(run, ui_url) for run_id, run in parent_runs(dag_id).items()} if tracked else {}
    return HTMLResponse(
        page(
            "metrics.html",
            dag_id=dag_id,
            gate=gate,
            runs=runs,
            metric=chosen,
            metric_names=metric_names,
            points=points,
            tracked=tracked,
            mlflow=mlflow,
            chart=Markup(svg(runs, chosen, threshold)),  # noqa: S704 - built from escaped parts (dood.ui.chart)
        ),
        headers=NO_STORE,
    )
