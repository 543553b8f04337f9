"""Hosts whose steps wait for a Celery worker that is not there, for the DooD page (issue 25.3).

A step placed on a host (`hosts:` in the config) goes to that host's Celery queue; while no live worker
listens on it, the task stays `queued` and no container exists, so the container list alone shows nothing.
`python -m dood.hosts workers` says which queues have no live worker; the page says it per host, with the
number of task instances queued there: "host gpu-b: no live worker: 3 tasks queued for it".

Asking Celery (`inspect active_queues`) waits for every worker's reply until its timeout, so a page never
asks itself: the answer is refreshed in the background at most every `REFRESH_SECONDS`, and a page shows
the latest one (none yet: nothing shown, the page's next refresh has it). The queued counts come from
Airflow's database, one grouped query.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: How old an answer of Celery's may be before it is asked again (the answer takes up to `ASK_TIMEOUT`).
REFRESH_SECONDS = 15.0
ASK_TIMEOUT = 5.0


@dataclass(frozen=True)
class Stranded:
    """A host whose queue(s) no live worker listens on, and the task instances queued there."""

    host: str
    queues: tuple[str, ...]
    queued: int

    def said(self) -> str:
        tasks = f"{self.queued} task{'' if self.queued == 1 else 's'} queued for it"
        return f"host {self.host}: no live worker: {tasks} (queue {', '.join(self.queues)})"


def stranded(missing: Mapping[str, Iterable[str]], queued: Mapping[str, int]) -> list[Stranded]:
    """Per host, the queues without a live worker (`missing`: queue -> hosts whose steps wait there, as
    `dood.config.placement.queues_without_worker` gives it) and how many task instances are queued in them
    (`queued`: queue -> count). A shared queue (a step that may run on several hosts) counts for each."""
    by_host: dict[str, list[str]] = {}
    for queue, hosts in missing.items():
        for host in hosts:
            by_host.setdefault(host, []).append(queue)
    return [
        Stranded(host, tuple(sorted(queues)), sum(queued.get(queue, 0) for queue in queues))
        for host, queues in sorted(by_host.items())
    ]


def queued_counts(queues: Iterable[str]) -> dict[str, dict[str, int]]:
    """Task instances in state `queued` per queue and DAG, from Airflow's database (the api-server has it):
    the page counts only the DAGs its user may read."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    wanted = sorted(set(queues))
    if not wanted:
        return {}
    found: dict[str, dict[str, int]] = {}
    with create_session() as session:
        rows = session.execute(
            select(TaskInstance.queue, TaskInstance.dag_id, func.count())
            .where(TaskInstance.state == "queued", TaskInstance.queue.in_(wanted))
            .group_by(TaskInstance.queue, TaskInstance.dag_id)
        )
        for queue, dag_id, count in rows:
            found.setdefault(str(queue), {})[str(dag_id)] = int(count)
    return found


class Workers:
    """The latest answer to "which queues have no live worker", refreshed in the background."""

    def __init__(self, ask: Callable[[], Mapping[str, Iterable[str]]], refresh: float = REFRESH_SECONDS) -> None:
        self._ask = ask  # -> queue: hosts, for queues without a live worker
        self._refresh = refresh
        self._lock = threading.Lock()
        self._asking = False
        self._at: float | None = None
        self.missing: dict[str, list[str]] = {}
        self.error: str | None = None  # why the last ask failed (the page's words)

    def latest(self) -> tuple[dict[str, list[str]], str | None] | None:
        """The last answer (queues without a worker, and an error); None before the first one. Starts a
        refresh when it is older than `refresh` seconds; never waits for one."""
        with self._lock:
            stale = self._at is None or time.monotonic() - self._at > self._refresh
            if stale and not self._asking:
                self._asking = True
                threading.Thread(target=self._update, name="dood-ui-workers", daemon=True).start()
            return None if self._at is None else (self.missing, self.error)

    def _update(self) -> None:
        try:
            missing = {queue: list(hosts) for queue, hosts in self._ask().items()}
            error = None
        except Exception as exc:  # noqa: BLE001 - the page says it cannot tell, and why
            log.warning("dood UI: could not ask Celery for its live workers: %s", exc)
            missing, error = {}, _said(exc)
        with self._lock:
            self.missing, self.error, self._at, self._asking = missing, error, time.monotonic(), False


def _said(exc: BaseException) -> str:
    from dood.ui.problems import why

    reason = why(exc)
    return f"which hosts have a live worker is unknown: Celery did not answer{f' ({reason})' if reason else ''}"


def ask_celery() -> dict[str, list[str]]:
    """Queues placement uses that no live Celery worker listens on, each with the hosts whose steps wait there
    (what `python -m dood.hosts workers` prints)."""
    from dood.config.model import load_config
    from dood.config.placement import queues_without_worker
    from dood.hosts import active_queues

    config = load_config()
    return queues_without_worker(config.hosts, config.pipelines, active_queues())


_workers: Workers | None = None
_decided = False
_workers_lock = threading.Lock()


def celery_workers() -> Workers | None:
    """This process' view of the Celery workers; None when there is nothing to watch (no `hosts:` in the
    config, or an executor other than Celery's: tasks then never wait on a host's queue). Decided once per
    api-server process, as its config and executor are."""
    global _workers, _decided
    with _workers_lock:
        if not _decided:
            _workers = Workers(ask_celery) if _uses_host_queues() else None
            _decided = True
        return _workers


def _uses_host_queues() -> bool:
    try:
        from airflow.configuration import conf

        from dood.config.model import load_config

        executor = conf.get("core", "executor", fallback="") or ""
        return bool(load_config().hosts) and "celery" in executor.lower()
    except Exception as exc:  # noqa: BLE001 - the page renders without this part
        log.warning("dood UI: cannot tell whether steps wait on hosts' queues: %s", exc)
        return False


def notices(
    workers: Workers | None, readable: Callable[[Iterable[str]], set[str]]
) -> tuple[list[Stranded], str | None]:
    """What the page shows: the stranded hosts, with the queued task instances of the DAGs the user may read
    (`readable`: which of these DAG ids), and why it cannot tell, if so."""
    if workers is None:
        return [], None
    latest = workers.latest()
    if latest is None:
        return [], None
    missing, error = latest
    if error or not missing:
        return [], error
    try:
        by_queue = queued_counts(missing)
    except Exception as exc:  # noqa: BLE001 - the hosts are still named
        log.warning("dood UI: no queued counts: %s", exc)
        by_queue = {}
    allowed = readable({dag_id for dags in by_queue.values() for dag_id in dags})
    queued = {queue: sum(n for dag_id, n in dags.items() if dag_id in allowed) for queue, dags in by_queue.items()}
    return stranded(missing, queued), None
