"""The DooD page's data: every dood container the user may see, with usage, outcome and orphan marks, and
the host summary on top."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from time import perf_counter
from typing import Any

from dood.ui import access
from dood.ui.every_host import Engines
from dood.ui.problems import counts_unknown
from dood.ui.rows import ALIVE, ContainerRow, TaskKey, build_row, select
from dood.ui.stopping import stopping
from dood.ui.task_states import task_states
from dood.ui.workers import Stranded, Workers, notices

log = logging.getLogger(__name__)


@dataclass
class Summary:
    """The counts on top of the DooD page; all None (`unknown`, shown as such) when no engine answered."""

    running: int | None = 0
    total: int | None = 0
    orphans: int | None = 0
    gpus_held: int | str | None = 0
    image_disk: int | None = None
    host: dict[str, Any] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)  # with several Docker hosts: their names (a host column)
    engines: dict[str, dict[str, Any]] = field(default_factory=dict)  # with several: each host's summary
    error: str | None = None
    unknown: bool = False  # no engine answered: nothing is known, not "0 running"
    stranded: list[Stranded] = field(default_factory=list)  # hosts whose queue no live worker listens on
    workers_error: str | None = None  # why which hosts have a live worker is not known


@dataclass
class Overview:
    rows: list[ContainerRow]
    dag_ids: list[str]
    summary: Summary
    now: datetime
    elapsed_ms: float
    phases: dict[str, float] = field(default_factory=dict)  # ms per step (the page's Server-Timing header)


def _gpus(rows: Iterable[ContainerRow]) -> int | str:
    held = [row.gpus for row in rows if row.state == "running" and row.gpus is not None]
    return "all" if "all" in held else sum(int(g) for g in held)


def _runs_root() -> str | None:
    """Where the stoppers' notes are; None (no "stopping" shown) when the config cannot be read."""
    try:
        from dood.config.model import load_config

        return load_config().runs_root
    except Exception as exc:  # noqa: BLE001 - the page must render whatever the config says
        log.warning("dood UI: no runs_root to read stop notes from: %s", exc)
        return None


def overview(
    reader: Engines, user, *, dag_id: str | None, state: str | None, workers: Workers | None = None
) -> Overview:
    """The page's data; with `workers` (a deployment with `hosts:` under Celery), the hosts whose steps wait
    for a worker that is not there too."""
    started = perf_counter()
    phases: dict[str, float] = {}
    mark = started

    def lap(name: str) -> None:
        nonlocal mark
        now_ = perf_counter()
        phases[name] = phases.get(name, 0.0) + (now_ - mark) * 1000
        mark = now_

    now = datetime.now(timezone.utc)
    summary = Summary()
    summary.stranded, summary.workers_error = notices(workers, lambda dag_ids: access.readable(user, dag_ids))
    lap("workers")
    try:
        entries = reader.containers()
        lap("list")
        summary.host = reader.host()
        lap("host")
    except Exception as exc:  # noqa: BLE001 - the page still renders, saying why the engine did not answer
        log.warning("dood UI: the Docker engine did not answer: %s", exc)  # the raw text: the log only
        summary.error = counts_unknown(exc)
        summary.unknown = True
        summary.running = summary.total = summary.orphans = summary.gpus_held = None
        return Overview([], [], summary, now, (perf_counter() - started) * 1000, phases)
    label_dag = {e["Id"]: (e.get("Labels") or {}).get("dood.dag_id", "") for e in entries}
    allowed = access.readable(user, label_dag.values())
    entries = [e for e in entries if label_dag[e["Id"]] in allowed]
    wanted = [e for e in entries if (not dag_id or label_dag[e["Id"]] == dag_id)]
    lap("access")
    inspected = reader.inspect_many(wanted)
    lap("inspect")
    used = reader.usage_many(e["Id"] for e in wanted if e.get("State") == "running")
    lap("stats")
    keys = {e["Id"]: TaskKey.from_labels(e.get("Labels") or {}) for e in entries}
    states = task_states(keys[e["Id"]] for e in entries if e.get("State") in ALIVE)
    lap("task_states")
    stops = stopping(_runs_root(), entries, now)  # who asked a stop, and when its grace ends
    lap("stopping")
    rows = [
        build_row(e, inspected.get(e["Id"]), used.get(e["Id"]), states.get(keys[e["Id"]]), stops.get(e["Id"]))
        for e in entries
    ]
    summary.total = len(rows)
    summary.running = sum(row.state == "running" for row in rows)
    summary.orphans = sum(row.orphan for row in rows)
    summary.gpus_held = _gpus(rows)
    lap("rows")
    summary.image_disk = reader.image_disk(row.image for row in rows if row.image)
    lap("images")
    summary.hosts = reader.host_names() if reader.several else []
    summary.engines = reader.hosts() if reader.several else {}
    if reader.errors:
        summary.error = "; ".join(reader.errors)
    shown = select(rows, dag_id=dag_id, state=state)
    dag_ids = sorted({row.task.dag_id for row in rows})
    lap("hosts")
    return Overview(shown, dag_ids, summary, now, (perf_counter() - started) * 1000, phases)
