"""The janitor: remove dood containers nobody will wait for any more, and never anything else.

A running container is an orphan when Airflow says its task instance has ended (or no longer exists);
one whose task may still come back for it (running, deferred, up for retry...) is kept, since the next try
reattaches to it. An ended container is removed once older than the TTL. Task states come from Airflow's
APIs (the Task SDK inside a task, the public REST API from the CLI), never from the metadata database.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from dood.docker_time import utc_datetime
from dood.naming import DEFAULT_STACK, HOST_LABEL, MANAGED_LABEL, STACK_LABEL, TaskIdentity
from dood.outcome import RUNNING
from dood.owner import NO_TASK_INSTANCE
from dood.owner import task_state as airflow_task_state
from dood.teardown import discard

MISSING = NO_TASK_INSTANCE
ENDED_TASK_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})

TaskStateLookup = Callable[[Mapping[str, str]], "str | None"]


@dataclass(frozen=True)
class Verdict:
    container_id: str
    name: str
    reason: str


def plan(
    containers: Iterable[Mapping[str, Any]],
    task_state: TaskStateLookup,
    *,
    ttl: timedelta,
    now: datetime,
    stack: str = DEFAULT_STACK,
    host: str | None = None,
) -> list[Verdict]:
    """Which of these (inspected) containers of `stack` (and of Docker host `host`, when the deployment has
    several) to remove, and why. Pure: decides, touches nothing. Another stack's container is as foreign as
    one dood never made: its Airflow is not ours to ask; another host's is that host's janitor's."""
    verdicts = []
    for container in containers:
        labels = container["Config"].get("Labels") or {}
        if labels.get(MANAGED_LABEL) != "true" or labels.get(STACK_LABEL) != stack:
            continue  # never ours to judge
        if host is not None and labels.get(HOST_LABEL) != host:
            continue
        name = container["Name"].lstrip("/")
        state = container["State"]
        if state["Status"] in RUNNING:
            ti_state = task_state(labels)
            if ti_state == MISSING:
                verdicts.append(Verdict(container["Id"], name, "its task instance no longer exists"))
            elif ti_state in ENDED_TASK_STATES:
                verdicts.append(Verdict(container["Id"], name, f"its task instance has ended ({ti_state})"))
            continue
        ended = utc_datetime(state.get("FinishedAt")) or utc_datetime(container.get("Created"))
        if ended and now - ended >= ttl:
            verdicts.append(
                Verdict(container["Id"], name, f"{state['Status']} for {_age(now - ended)} (ttl {_age(ttl)})")
            )
    return verdicts


def sweep(
    api,
    task_state: TaskStateLookup,
    *,
    ttl: timedelta,
    dry_run: bool,
    grace_seconds: int = 30,
    only_labels: Mapping[str, str] | None = None,
    stack: str = DEFAULT_STACK,
    host: str | None = None,
    log: Callable[[str], None] = print,
) -> list[Verdict]:
    """Find our stack's containers (of Docker host `host` only, when given; only those also carrying
    `only_labels`, when given), decide, and (unless dry run) stop and remove the orphans."""
    wanted = {**(only_labels or {}), MANAGED_LABEL: "true", STACK_LABEL: stack}
    if host is not None:
        wanted[HOST_LABEL] = host
    listed = api.containers(all=True, filters={"label": [f"{key}={value}" for key, value in wanted.items()]})
    inspected = [api.inspect_container(c["Id"]) for c in listed]
    verdicts = plan(inspected, task_state, ttl=ttl, now=datetime.now(timezone.utc), stack=stack, host=host)
    for verdict in verdicts:
        log(f"{'would remove' if dry_run else 'removing'} {verdict.name}: {verdict.reason}")
        if not dry_run:
            discard(api, verdict.container_id, grace_seconds)
    where = f" on host {host!r}" if host is not None else ""
    log(
        f"janitor: {len(listed)} containers of stack {stack!r}{where}, "
        f"{len(verdicts)} {'to remove' if dry_run else 'removed'}"
    )
    return verdicts


def task_sdk_states(labels: Mapping[str, str]) -> str | None:
    """Task state through the Task SDK (inside an Airflow task, e.g. the maintenance DAG)."""
    return airflow_task_state(TaskIdentity.from_labels(labels))


class RestApiStates:
    """Task state through Airflow's public REST API (`/api/v2`), for the CLI outside Airflow."""

    def __init__(self, base_url: str, username: str | None, password: str | None, token: str | None = None):
        import httpx

        self.client = httpx.Client(base_url=base_url.rstrip("/"), timeout=30)
        if not token and username:
            response = self.client.post("/auth/token", json={"username": username, "password": password})
            response.raise_for_status()
            token = response.json()["access_token"]
        if token:
            self.client.headers["Authorization"] = f"Bearer {token}"

    def __call__(self, labels: Mapping[str, str]) -> str | None:
        from urllib.parse import quote

        identity = TaskIdentity.from_labels(labels)
        path = "/api/v2/dags/{}/dagRuns/{}/taskInstances/{}".format(
            *(quote(value, safe="") for value in (identity.dag_id, identity.run_id, identity.task_id))
        )
        if identity.map_index != -1:
            path += f"/{identity.map_index}"
        response = self.client.get(path)
        if response.status_code == 404:
            return MISSING
        response.raise_for_status()
        return response.json().get("state")


def main(argv: list[str] | None = None) -> int:
    """`dood-janitor`: remove orphaned dood containers, asking Airflow's REST API about their tasks."""
    parser = argparse.ArgumentParser(prog="dood-janitor", description=main.__doc__)
    parser.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    parser.add_argument("--ttl-hours", type=float, default=24, help="remove ended containers older than this")
    parser.add_argument("--api-url", default=os.environ.get("DOOD_AIRFLOW_API_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--username", default=os.environ.get("DOOD_AIRFLOW_USERNAME"))
    parser.add_argument("--password", default=os.environ.get("DOOD_AIRFLOW_PASSWORD"))
    parser.add_argument("--token", default=os.environ.get("DOOD_AIRFLOW_TOKEN"))
    parser.add_argument("--config", default=None, help="dood config (default: $DOOD_CONFIG)")
    parser.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE", help="only containers with this label too"
    )
    args = parser.parse_args(argv)
    only_labels = dict(item.split("=", 1) for item in args.label)

    from dood.config import load_config
    from dood.hooks.dood import DoodHook

    config = load_config(args.config)
    states = RestApiStates(args.api_url, args.username, args.password, args.token)
    hook = DoodHook(config)
    sweep(
        hook.api,
        states,
        ttl=timedelta(hours=args.ttl_hours),
        dry_run=args.dry_run,
        grace_seconds=config.defaults.stop_grace_period_seconds,
        only_labels=only_labels,
        stack=hook.stack,
        host=config.host,
    )
    return 0


def _age(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} h" if hours >= 1 else f"{delta.total_seconds():.0f} s"


if __name__ == "__main__":
    sys.exit(main())
