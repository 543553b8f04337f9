"""A pipeline's Airflow assets at run time: the events that started a run, and promote's model event.

The DAG factory declares the assets (prepare's inlets, promote's outlet, an asset `schedule`); this module is
what a step does with them when it runs. Airflow records an event for each outlet of a task that *succeeds*,
and none for a skipped one: so promote emits the model event only when it crowns a model (its result says
`promoted: true`), and is skipped, with the reason in its log, when it keeps the champion.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowSkipException

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow.sdk import Context

    from dood.config.pipelines import AssetRef, Pipeline

#: The extra key of an input's event that names the data date a run should train on (`dataset_date` Param).
DATASET_DATE_KEY = "dataset_date"
#: At most this many characters of consumed events reach a step as $DOOD_ASSET_EVENTS (an environment variable).
EVENTS_ENV_LIMIT = 32_768


def airflow_asset(ref: AssetRef) -> Asset:
    """The Airflow asset a config entry names (its name defaults to its URI, as Airflow's does)."""
    return Asset(uri=ref.uri, name=ref.name) if ref.name else Asset(uri=ref.uri)


def input_events(context: Context, pipeline: Pipeline) -> list[dict[str, Any]]:
    """The asset events of the pipeline's inputs this run consumed (an asset-triggered run; none for the
    others), oldest first, as plain JSON: asset name and URI, extra, timestamp, source DAG and run."""
    accessor = context.get("triggering_asset_events") or {}
    uris = {airflow_asset(ref).uri for ref in pipeline.inputs}
    events = []
    for asset in accessor:
        if getattr(asset, "uri", None) not in uris:
            continue
        for event in accessor[asset]:
            events.append(
                {
                    "asset": {"name": event.asset.name, "uri": event.asset.uri},
                    "extra": dict(event.extra or {}),
                    "timestamp": event.timestamp.isoformat(),
                    "source_dag_id": event.source_dag_id,
                    "source_run_id": event.source_run_id,
                }
            )
    return sorted(events, key=lambda event: event["timestamp"])


def dataset_date_of(events: list[dict[str, Any]]) -> str | None:
    """The newest event's `dataset_date` extra, when it is an ISO date (YYYY-MM-DD)."""
    for event in reversed(events):
        value = event["extra"].get(DATASET_DATE_KEY)
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value).isoformat()
            except ValueError:
                return None
    return None


def events_env(events: list[dict[str, Any]]) -> str:
    """$DOOD_ASSET_EVENTS: the events as JSON, the newest kept when they do not fit the limit."""
    kept = list(events)
    text = json.dumps(kept, sort_keys=True)
    while len(text) > EVENTS_ENV_LIMIT and kept:
        kept.pop(0)
        text = json.dumps(kept, sort_keys=True)
    return text


def model_event_extra(result: Any, context: Context, pipeline_name: str, metric: str) -> dict[str, Any]:
    """The model event's extra, from promote's result: the metric values, the run that crowned the model,
    where the model is on the Docker host and its digest (what a deployment checks before it loads it)."""
    result = result if isinstance(result, dict) else {}
    metrics = result.get("metrics")
    if not isinstance(metrics, dict):
        metrics = {metric: result[metric]} if metric in result else {}
    dag_run = context.get("dag_run")
    run_type = getattr(dag_run, "run_type", None)
    return {
        "pipeline": pipeline_name,
        "dag_id": context["dag"].dag_id,
        "run_id": context["run_id"],
        "run_type": str(getattr(run_type, "value", run_type) or ""),
        "metrics": metrics,
        "model_path": result.get("model_path") or result.get("champion_dir"),
        "model_digest": result.get("model_digest"),
        "reason": result.get("reason"),
    }


def emit_model_event(
    result: Any, context: Context, model: AssetRef, pipeline_name: str, metric: str, log: Any
) -> Mapping[str, Any]:
    """Give promote's outlet event its extra; skip the task (no event) when its result does not say it crowned
    a model: Airflow emits an outlet's event for every successful task, so a success must mean a new champion."""
    if not (isinstance(result, dict) and result.get("promoted") is True):
        raise AirflowSkipException(
            f"promote kept the champion (its result says no `promoted: true`): no event of the model asset "
            f"{model.key!r}; skipped"
        )
    extra = model_event_extra(result, context, pipeline_name, metric)
    context["outlet_events"][airflow_asset(model)].extra = extra
    log.info("Model asset %s: event with %s", model.key, json.dumps(extra, sort_keys=True, default=str))
    return extra
