"""Containers handed off: started with ``DoodContainerOperator(wait=False)``, waited for by someone else.

Once such a start task succeeds, its container belongs to whoever waits for it (a ``DoodContainerSensor``,
or the run), not to the start task: the janitor must not take it for an orphan. The hand-off is recorded
at create in the label ``dood.handoff`` (labels cannot change later): the task ids of the sensors found
downstream of the start task that wait for it, or ``*`` when none was found (the run waits, e.g. a sensor
given a ``container_id`` built some other way). The janitor's rule (`dood.janitor.judge_running`) keeps
a handed-off container while its DAG run is queued or running and, when waiters are named, while one of
them has not finished; it removes it once the run has ended, whatever the label says.

This module only reads and writes the label; it imports nothing heavy, as dood-proxy imports it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

HANDOFF_LABEL = "dood.handoff"
ANY_WAITER = "*"  # no sensor named: the run waits for it (e.g. a sensor given a container_id template)
_TASK_ID = re.compile(r"^[\w.-]{1,250}$")  # Airflow's task id pattern: never a comma, never '*'


def handoff_label(waiters: Iterable[str]) -> dict[str, str]:
    """The label of a container handed off to `waiters` (task ids; none: to the run)."""
    named = sorted({waiter for waiter in waiters if _TASK_ID.match(waiter)})
    return {HANDOFF_LABEL: ",".join(named) if named else ANY_WAITER}


def waiters(labels: Mapping[str, str]) -> tuple[str, ...] | None:
    """Who a container was handed off to: None when it was not (its task waits for it itself); () when to
    the run; else the sensors' task ids. A malformed value (the label passes dood-proxy as the client set
    it) means the run: the janitor's bound, the run's end, holds whatever the label says."""
    value = labels.get(HANDOFF_LABEL)
    if value is None:
        return None
    named = tuple(part for part in value.split(",") if part)
    if value == ANY_WAITER or not named or not all(_TASK_ID.match(part) for part in named):
        return ()
    return named


def waiters_of(task: Any) -> list[str]:
    """The task ids of the sensors downstream of `task` (an operator in its DAG) that wait for its
    container: a `DoodContainerSensor(upstream_task_id=<its task id>)`, or one whose `container_id`
    template names its task id (e.g. ``ti.xcom_pull('start')``). Duck-typed: nothing here imports sensors."""
    try:
        downstream = task.get_flat_relatives(upstream=False)
    except Exception:  # noqa: BLE001 - no DAG (a unit test's bare operator): nobody known, the run waits
        return []
    found = []
    for other in downstream:
        upstream_task_id = getattr(other, "upstream_task_id", None)
        container_id = getattr(other, "container_id", None)
        if upstream_task_id == task.task_id or (
            isinstance(container_id, str) and re.search(rf"['\"]{re.escape(task.task_id)}['\"]", container_id)
        ):
            found.append(other.task_id)
    return sorted(found)


def describe(labels: Mapping[str, str]) -> str | None:
    """How the page says who a handed-off container belongs to (None: not handed off)."""
    named = waiters(labels)
    if named is None:
        return None
    return f"handed off to {', '.join(named)}" if named else "waited for by the run"
