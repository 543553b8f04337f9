"""The evaluate step's metrics across a pipeline DAG's runs, from Airflow's own XComs (no second store).

Evaluate's return value (the result JSON its container wrote) gives the metrics; promote's return value
says whether that run became the champion (a skipped promote has none). The quality gate comes from the
dood config the DAG was built from (`pipelines.<name>.quality_gate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dood.naming import DAG_ID_PREFIX

EVALUATE, PROMOTE = "evaluate", "promote"
MAX_RUNS = 1000


@dataclass(frozen=True)
class QualityGate:
    metric: str
    minimum: float | None


@dataclass
class RunMetrics:
    run_id: str
    run_type: str
    logical_date: datetime | None
    run_after: datetime | None
    state: str
    values: dict[str, float] = field(default_factory=dict)
    promoted: bool = False

    @property
    def when(self) -> datetime | None:
        return self.logical_date or self.run_after


def pipeline_name(dag_id: str) -> str | None:
    return dag_id[len(DAG_ID_PREFIX) :] if dag_id.startswith(DAG_ID_PREFIX) else None


def quality_gate(dag_id: str) -> QualityGate | None:
    """The pipeline's gate, or None when the config has no such pipeline (not a dood pipeline DAG)."""
    from dood.config.model import load_config

    name = pipeline_name(dag_id)
    pipeline = load_config().pipelines.get(name) if name else None
    if pipeline is None:
        return None
    return QualityGate(pipeline.quality_gate.metric, pipeline.quality_gate.minimum)


def numbers(value: Any) -> dict[str, float]:
    """The numeric entries of a result (booleans and nested values are not metrics)."""
    if not isinstance(value, dict):
        return {}
    return {str(k): float(v) for k, v in value.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def run_metrics(dag_id: str) -> list[RunMetrics]:
    """One entry per run whose evaluate returned metrics, oldest first."""
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    runs: dict[str, RunMetrics] = {}
    promoted: set[str] = set()
    with create_session() as session:
        rows = session.execute(
            select(
                XComModel.run_id,
                XComModel.task_id,
                XComModel.value,
                DagRun.run_type,
                DagRun.logical_date,
                DagRun.run_after,
                DagRun.state,
            )
            .join(DagRun, XComModel.dag_run_id == DagRun.id)
            .where(
                XComModel.dag_id == dag_id,
                XComModel.task_id.in_((EVALUATE, PROMOTE)),
                XComModel.key == "return_value",
                XComModel.map_index == -1,
            )
            .order_by(DagRun.run_after.desc())
            .limit(2 * MAX_RUNS)
        )
        for run_id, task_id, raw, run_type, logical_date, run_after, state in rows:
            value = XComModel.deserialize_value(_Raw(raw))
            if task_id == PROMOTE:
                if isinstance(value, dict) and value.get("promoted") is True:
                    promoted.add(run_id)
                continue
            values = numbers(value)
            if values:
                runs[run_id] = RunMetrics(
                    run_id=run_id,
                    run_type=_text(run_type),
                    logical_date=logical_date,
                    run_after=run_after,
                    state=_text(state),
                    values=values,
                )
    for run_id in promoted & runs.keys():
        runs[run_id].promoted = True
    return sorted(runs.values(), key=lambda r: (r.when is None, r.when or datetime.min, r.run_id))


class _Raw:
    def __init__(self, value: Any) -> None:
        self.value = value


def _text(value: Any) -> str:
    return str(getattr(value, "value", value) or "")
