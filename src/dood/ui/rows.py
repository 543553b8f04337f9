"""What the DooD page shows for one container, from the engine's list entry, inspect and stats (pure).

Orphans follow the janitor's own rule (`dood.janitor`): a running container whose task instance has ended
or no longer exists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from dood.docker_time import utc_datetime
from dood.gpus import GPUS_LABEL
from dood.janitor import ENDED_TASK_STATES, MISSING
from dood.naming import HOST_LABEL
from dood.outcome import ENDED as ENDED_STATES
from dood.outcome import RUNNING, STILL_GOING
from dood.ui.samples import Usage, gpus_held

ALIVE = frozenset(RUNNING)
HOST_KEY = "DoodHost"  # added to a list entry by dood.ui.engines: the host whose engine listed it
ENDED = frozenset(ENDED_STATES)
STATES = (*STILL_GOING, *ENDED_STATES, "removing")  # the page's state filter


@dataclass(frozen=True)
class TaskKey:
    dag_id: str
    run_id: str
    task_id: str
    map_index: int

    @classmethod
    def from_labels(cls, labels: Mapping[str, str]) -> TaskKey:
        return cls(
            labels.get("dood.dag_id", ""),
            labels.get("dood.run_id", ""),
            labels.get("dood.task_id", ""),
            _int(labels.get("dood.map_index"), -1),
        )


@dataclass(frozen=True)
class ContainerRow:
    container_id: str
    name: str
    task: TaskKey
    try_number: int
    image: str
    state: str
    status: str
    created: datetime | None
    cpu_percent: float | None = None
    memory_bytes: int | None = None
    memory_limit: int | None = None
    gpus: int | str | None = None
    exit_code: int | None = None
    oom_killed: bool = False
    ti_state: str | None = None
    orphan: bool = False
    host: str = ""  # the Docker host it runs on, when the deployment has several (`hosts:`)

    @property
    def short_id(self) -> str:
        return self.container_id[:12]

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    def age_seconds(self, now: datetime) -> float | None:
        return (now - self.created).total_seconds() if self.created else None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.container_id,
            "name": self.name,
            "dag_id": self.task.dag_id,
            "run_id": self.task.run_id,
            "task_id": self.task.task_id,
            "map_index": self.task.map_index,
            "try_number": self.try_number,
            "image": self.image,
            "state": self.state,
            "status": self.status,
            "created": self.created.isoformat() if self.created else None,
            "cpu_percent": self.cpu_percent,
            "memory_bytes": self.memory_bytes,
            "memory_limit": self.memory_limit,
            "gpus": self.gpus,
            "exit_code": self.exit_code,
            "oom_killed": self.oom_killed,
            "ti_state": self.ti_state,
            "orphan": self.orphan,
        }


def is_orphan(state: str, ti_state: str | None) -> bool:
    """The janitor's rule: alive, while its task instance has ended or is gone."""
    return state in ALIVE and (ti_state == MISSING or ti_state in ENDED_TASK_STATES)


def build_row(
    entry: Mapping[str, Any],
    inspected: Mapping[str, Any] | None = None,
    used: Usage | None = None,
    ti_state: str | None = None,
) -> ContainerRow:
    labels = entry.get("Labels") or {}
    state = entry.get("State") or ""
    outcome = (inspected or {}).get("State") or {}
    ended = state in ENDED
    names = entry.get("Names") or [entry.get("Id", "")[:12]]
    return ContainerRow(
        container_id=entry.get("Id", ""),
        name=str(names[0]).lstrip("/"),
        task=TaskKey.from_labels(labels),
        try_number=_int(labels.get("dood.try_number"), 1),
        image=str(entry.get("Image") or ""),
        state=state,
        status=str(entry.get("Status") or ""),
        created=utc_datetime(entry.get("Created")),
        cpu_percent=used.cpu_percent if used else None,
        memory_bytes=used.memory_bytes if used else None,
        memory_limit=used.memory_limit if used else None,
        gpus=_gpus(labels, inspected) if state in ALIVE else None,
        exit_code=outcome.get("ExitCode") if ended else None,
        oom_killed=bool(outcome.get("OOMKilled")) if ended else False,
        ti_state=ti_state,
        orphan=is_orphan(state, ti_state),
        host=str(labels.get(HOST_LABEL) or entry.get(HOST_KEY) or ""),
    )


def select(rows: Iterable[ContainerRow], *, dag_id: str | None, state: str | None) -> list[ContainerRow]:
    """The rows the filters keep, newest first (`state=orphan` keeps the orphans)."""
    kept = [
        row
        for row in rows
        if (not dag_id or row.task.dag_id == dag_id)
        and (not state or row.state == state or (state == "orphan" and row.orphan))
    ]
    oldest = datetime.min.replace(tzinfo=timezone.utc)
    return sorted(kept, key=lambda row: (row.created or oldest, row.name), reverse=True)


def _gpus(labels: Mapping[str, str], inspected: Mapping[str, Any] | None) -> int | str | None:
    """GPUs a live container holds: its `dood.gpus` label (set by dood's claims, forced by dood-proxy to
    the devices the create named), else its device requests when it was inspected."""
    named = [gpu for gpu in (labels.get(GPUS_LABEL) or "").split(",") if gpu.strip()]
    if named:
        return len(named)
    return gpus_held((inspected or {}).get("HostConfig"))


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
