"""What the DooD page shows for one container, from the engine's list entry, inspect and stats (pure).

Orphans follow the janitor's own rule (`dood.janitor.running_ownership`): a running container whose task
instance has ended or no longer exists, unless it was handed off (``wait=False``, label ``dood.handoff``) to
sensors or a run that still wait for it; the row then says who ("handed off to wait (up_for_reschedule)").
A container being stopped shows "stopping", with who asked and when its grace period ends, from the note
the stopper left (`dood.ui.stopping`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from dood.gpus.holdings import GPUS_LABEL
from dood.janitor import MISSING, Ownership, running_ownership
from dood.lifecycle.docker_time import utc_datetime
from dood.lifecycle.handoff import HANDOFF_LABEL
from dood.lifecycle.outcome import ENDED as ENDED_STATES
from dood.lifecycle.outcome import RUNNING, STILL_GOING
from dood.naming import HOST_LABEL
from dood.ui.samples import Usage, gpus_held

ALIVE = frozenset(RUNNING)
HOST_KEY = "DoodHost"  # added to a list entry by dood.ui.every_host: the host whose engine listed it
ENDED = frozenset(ENDED_STATES)
STATES = (*STILL_GOING, "stopping", *ENDED_STATES, "removing")  # the page's state filter


@dataclass(frozen=True)
class TaskKey:
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    handoff: str | None = None  # the container's `dood.handoff` label: task_states then asks about its waiters

    @classmethod
    def from_labels(cls, labels: Mapping[str, str]) -> TaskKey:
        return cls(
            labels.get("dood.dag_id", ""),
            labels.get("dood.run_id", ""),
            labels.get("dood.task_id", ""),
            _int(labels.get("dood.map_index"), -1),
            labels.get(HANDOFF_LABEL),
        )

    def labels(self, task_id: str | None = None) -> dict[str, str]:
        """The labels the janitor's rule reads (of `task_id` in the same run, when given)."""
        labels = {"dood.dag_id": self.dag_id, "dood.run_id": self.run_id, "dood.task_id": task_id or self.task_id}
        labels["dood.map_index"] = str(self.map_index)
        if self.handoff is not None:
            labels[HANDOFF_LABEL] = self.handoff
        return labels


@dataclass(frozen=True)
class HandedOff:
    """What Airflow says about a handed-off container's owners: its own task instance's state, its waiters'
    (by task id) and its DAG run's (`MISSING`: none)."""

    ti_state: str | None
    waiter_states: Mapping[str, str | None]
    run_state: str | None

    def ownership(self, key: TaskKey) -> Ownership:
        return running_ownership(
            key.labels(),
            self.ti_state,
            lambda labels: self.waiter_states.get(labels["dood.task_id"], MISSING),
            lambda _labels: self.run_state,
        )


@dataclass(frozen=True)
class Stopping:
    """A stop in progress, as its stopper noted it (`dood.lifecycle.teardown.note_stopping`)."""

    who: str
    asked_at: datetime
    grace_ends: datetime


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
    owner: str | None = None  # who a running container belongs to ("its task (running)", "handed off to ...")
    stopping: Stopping | None = None  # a running container someone is stopping

    @property
    def short_id(self) -> str:
        return self.container_id[:12]

    @property
    def shown_state(self) -> str:
        """The state the page shows: "stopping" while a stop of a running container is under way."""
        return "stopping" if self.stopping and self.state in ALIVE else self.state

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
            "owner": self.owner,
            "shown_state": self.shown_state,
            "stopping": (
                {
                    "who": self.stopping.who,
                    "asked_at": self.stopping.asked_at.isoformat(),
                    "grace_ends": self.stopping.grace_ends.isoformat(),
                }
                if self.stopping
                else None
            ),
        }


def ownership(state: str, key: TaskKey, ti_state: str | HandedOff | None) -> Ownership | None:
    """The janitor's rule for a live container (None: not alive, or its task state unknown to the page)."""
    if state not in ALIVE:
        return None
    if isinstance(ti_state, HandedOff):
        return ti_state.ownership(key)
    return running_ownership(key.labels(), ti_state, lambda _labels: MISSING, lambda _labels: MISSING)


def is_orphan(state: str, ti_state: str | HandedOff | None, key: TaskKey | None = None) -> bool:
    """The janitor's rule: alive, while nobody may wait for it any more (its task instance has ended or is
    gone, and it was not handed off to a sensor or a run still running)."""
    found = ownership(state, key or TaskKey("", "", "", -1), ti_state)
    return bool(found and found.orphan)


def build_row(
    entry: Mapping[str, Any],
    inspected: Mapping[str, Any] | None = None,
    used: Usage | None = None,
    ti_state: str | HandedOff | None = None,
    stopping: Stopping | None = None,
) -> ContainerRow:
    """One row; `ti_state` is its task instance's state, or `HandedOff` (`task_states` gives either)."""
    labels = entry.get("Labels") or {}
    state = entry.get("State") or ""
    key = TaskKey.from_labels(labels)
    owned = ownership(state, key, ti_state)
    own_state = ti_state.ti_state if isinstance(ti_state, HandedOff) else ti_state
    outcome = (inspected or {}).get("State") or {}
    ended = state in ENDED
    names = entry.get("Names") or [entry.get("Id", "")[:12]]
    return ContainerRow(
        container_id=entry.get("Id", ""),
        name=str(names[0]).lstrip("/"),
        task=key,
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
        ti_state=own_state,
        orphan=bool(owned and owned.orphan),
        host=str(labels.get(HOST_LABEL) or entry.get(HOST_KEY) or ""),
        owner=owned.owner if owned and ti_state is not None else None,
        stopping=stopping if state in ALIVE else None,
    )


def select(rows: Iterable[ContainerRow], *, dag_id: str | None, state: str | None) -> list[ContainerRow]:
    """The rows the filters keep, newest first (`state=orphan` keeps the orphans)."""
    kept = [
        row
        for row in rows
        if (not dag_id or row.task.dag_id == dag_id)
        and (
            not state
            or row.state == state
            or (state == "orphan" and row.orphan)
            or (state == "stopping" and row.shown_state == "stopping")
        )
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
