"""Placement: which Docker hosts a step may run on, and the Celery queue and Airflow pool that take it there.

Scale-out is Airflow's own: the CeleryExecutor delivers a task to a worker listening on the task's `queue`,
and each Docker host runs a worker on its host's queue (`hosts.<name>.queue`, default `dood-<name>`), so a
step placed on a host is launched by that host's worker on that host's engine. A per-host pool
(`dood-<name>`, `hosts.<name>.pool_slots`) bounds how many placed steps run there at once. A step placed on
several hosts (`hosts: [a, b]`, or `host_labels` matching several) goes to their shared queue `dood-a+b`, on
which every one of their workers also listens (`python -m dood.hosts queues`), and to a pool of that name
whose slots are the sum of theirs.

Pure: decides from the config's `hosts:` and pipelines, touches nothing, and imports only the endpoints' and
pipelines' models, for typing (the config model calls it while validating). Docs: docs/hosts.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dood.config.endpoints import Host, MountMapEntry
    from dood.config.pipelines import Pipeline, Step

PREFIX = "dood-"
#: The pipeline roots steps exchange data through: on several hosts they must be shared storage.
SHARED_ROOTS = ("data_root", "model_root", "artifact_root")
#: Where a step without placement may run, besides every host: the workers of the top-level `docker`.
DEFAULT_HOST = "(default)"


@dataclass(frozen=True)
class Placement:
    """Where a task may run: the hosts (by name), the Celery queue that reaches their workers, its pool."""

    hosts: tuple[str, ...]
    queue: str
    pool: str
    pool_slots: int

    def describe(self) -> str:
        names = ", ".join(self.hosts)
        return f"{'host' if len(self.hosts) == 1 else 'hosts'} {names} (queue {self.queue}, pool {self.pool})"

    def to_kwargs(self) -> dict[str, Any]:
        """What a `Placement` passed to an operator's `placement=` carries, as plain values."""
        return {"hosts": self.hosts, "queue": self.queue, "pool": self.pool, "pool_slots": self.pool_slots}


def host_queue(name: str, host: Host) -> str:
    return host.queue or f"{PREFIX}{name}"


def select(
    hosts: Mapping[str, Host],
    *,
    host: str | None = None,
    names: Iterable[str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> tuple[str, ...]:
    """The names of the hosts a `host`, `hosts` or `host_labels` placement designates; ValueError with the
    fix when it names an unknown host, matches none, or the config has no hosts at all."""
    given = [what for what, value in (("host", host), ("hosts", names), ("host_labels", labels)) if value]
    if not given:
        return ()
    if len(given) > 1:
        raise ValueError(f"give at most one of host, hosts, host_labels (got {', '.join(given)})")
    if not hosts:
        raise ValueError(
            f"{given[0]} needs hosts under `hosts:` in the dood config, and there are none (docs/hosts.md)"
        )
    if labels:
        chosen = tuple(sorted(n for n, h in hosts.items() if all(h.labels.get(k) == v for k, v in labels.items())))
        if not chosen:
            known = "; ".join(f"{n}: {dict(h.labels)}" for n, h in sorted(hosts.items()))
            raise ValueError(f"host_labels {dict(labels)} match no host (hosts and their labels: {known})")
        return chosen
    wanted = (host,) if host else tuple(names or ())
    unknown = [n for n in wanted if n not in hosts]
    if unknown:
        raise ValueError(f"unknown host(s) {unknown}; the dood config's hosts are {sorted(hosts)}")
    return tuple(sorted(set(wanted)))


def place(
    hosts: Mapping[str, Host],
    *,
    host: str | None = None,
    names: Iterable[str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> Placement | None:
    """The queue and pool of a placement; None when nothing is asked (Airflow's default queue, any worker)."""
    chosen = select(hosts, host=host, names=names, labels=labels)
    if not chosen:
        return None
    if len(chosen) == 1:
        name = chosen[0]
        return Placement(chosen, host_queue(name, hosts[name]), f"{PREFIX}{name}", hosts[name].pool_slots)
    group = f"{PREFIX}{'+'.join(chosen)}"
    return Placement(chosen, group, group, sum(hosts[n].pool_slots for n in chosen))


def step_placement(step: Step, hosts: Mapping[str, Host]) -> Placement | None:
    return place(hosts, host=step.host, names=step.hosts, labels=step.host_labels)


def pipeline_problems(
    pipeline: Pipeline, hosts: Mapping[str, Host], top_mount_map: Iterable[MountMapEntry]
) -> list[str]:
    """What is wrong with where a pipeline's steps run: unknown hosts, a pool beside a placement, and steps
    landing on hosts that do not all map the pipeline's roots (data, models, artifacts) to shared storage.

    A step without placement goes to Airflow's default queue, which the top-level `docker`'s workers serve
    (and any host's worker may): in a pipeline that places some steps, it counts as landing there and on
    every host. A pipeline that places none is left as it is today."""
    problems = []
    landing: dict[str, tuple[str, ...]] = {}
    for step_name, step in pipeline.steps.items():
        try:
            placement = step_placement(step, hosts)
        except ValueError as exc:
            problems.append(f"steps.{step_name}: {exc}")
            continue
        if placement is not None:
            landing[step_name] = placement.hosts
            if pipeline.pool:
                problems.append(
                    f"steps.{step_name}: placed on {placement.describe()}, so its pool is {placement.pool} (the "
                    f"host's bound); the pipeline's pool {pipeline.pool!r} cannot apply too (a task has one pool). "
                    "Drop `pool`, or bound the host with hosts.<name>.pool_slots."
                )
    if problems or not landing:
        return problems
    for step_name in pipeline.steps:
        landing.setdefault(step_name, (DEFAULT_HOST, *sorted(hosts)))
    involved = sorted({name for names in landing.values() for name in names})
    if len(involved) < 2:
        return problems
    where = ", ".join(f"{step} ({'/'.join(names)})" for step, names in landing.items())
    for name in involved:
        if name == DEFAULT_HOST:
            entries, who, where_to = tuple(top_mount_map), "the default queue's host (top-level docker)", "mount_map"
        else:
            mapped = hosts[name].mount_map
            entries = tuple(top_mount_map) if mapped is None else mapped
            who, where_to = f"host {name!r}", f"hosts.{name}.mount_map"
        missing = [f"{r} {getattr(pipeline, r)}" for r in SHARED_ROOTS if not _covered(getattr(pipeline, r), entries)]
        if missing:
            problems.append(
                f"steps {where} run on different hosts and exchange data through shared storage, but {who} has "
                f"no mount_map entry for {', '.join(missing)}: it shares no data root with the others. Mount the "
                f"shared storage there and map it under {where_to} (or place every step on hosts that share it; "
                "docs/hosts.md)."
            )
    return problems


def _covered(path: str, entries: Iterable[MountMapEntry]) -> bool:
    path = os.path.normpath(path)
    for entry in entries:
        root = os.path.normpath(entry.airflow_path)
        if path == root or path.startswith(root.rstrip("/") + "/"):
            return True
    return False


def worker_queues(name: str, hosts: Mapping[str, Host], pipelines: Mapping[str, Pipeline]) -> list[str]:
    """The queues host `name`'s worker listens on: its own, and every shared queue of a pipeline step that
    may run on it (`airflow celery worker --queues $(python -m dood.hosts queues)`)."""
    queues = [host_queue(name, hosts[name])]
    for pipeline in pipelines.values():
        for step in pipeline.steps.values():
            placement = step_placement(step, hosts)
            if placement and name in placement.hosts and placement.queue not in queues:
                queues.append(placement.queue)
    return queues


def pools(hosts: Mapping[str, Host], pipelines: Mapping[str, Pipeline]) -> dict[str, dict[str, Any]]:
    """Every pool placement uses, in the format `airflow pools import` reads. Deferred tasks take their slot:
    their container runs on the host meanwhile."""
    found: dict[str, dict[str, Any]] = {}
    placements = [place(hosts, host=name) for name in hosts]
    placements += [step_placement(s, hosts) for p in pipelines.values() for s in p.steps.values()]
    for placement in placements:
        if placement is not None and placement.pool not in found:
            found[placement.pool] = {
                "slots": placement.pool_slots,
                "description": f"dood: steps running on {placement.describe()} (docs/hosts.md)",
                "include_deferred": True,
            }
    return found


def queues_without_worker(
    hosts: Mapping[str, Host], pipelines: Mapping[str, Pipeline], active: Mapping[str, Iterable[str]]
) -> dict[str, list[str]]:
    """The queues placement uses that no live worker listens on (`active`: worker -> its queues, as Celery's
    `inspect active_queues` reports them), each with the hosts whose steps would wait there. Their tasks stay
    queued until `[scheduler] task_queued_timeout` (docs/hosts.md)."""
    listened = {queue for queues in active.values() for queue in queues}
    missing: dict[str, list[str]] = {}
    for name in hosts:
        for queue in worker_queues(name, hosts, pipelines):
            if queue not in listened:
                missing.setdefault(queue, []).append(name)
    return missing
