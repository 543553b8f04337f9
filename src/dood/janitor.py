"""The janitor: remove dood containers nobody will wait for any more, and never anything else.

A running container is an orphan when Airflow says its task instance has ended (or no longer exists);
one whose task may still come back for it (running, deferred, up for retry...) is kept, since the next try
reattaches to it. A container handed off (started with ``wait=False``, label ``dood.handoff``:
`dood.handoff`) belongs to its waiters once its task ended: it is kept while its DAG run is queued or running
and, when sensors are named, while one of them has not finished (poking, up for reschedule, up for retry);
it goes once they all ended, or once the run ended, whatever the label says. An ended container is removed
once older than the TTL. States come from Airflow's APIs (the Task SDK inside a task, the public REST API
from the CLI), never from the metadata database.

Orphans are ended together (`dood.lifecycle.teardown.discard_all`, `STOP_WORKERS` API calls at a time): each is
signalled first, then waited for until its own grace period ends, SIGKILLed if still running, and removed;
a sweep of many orphans that ignore SIGTERM takes about one grace period, not one per orphan.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from dood.exceptions import DoodError
from dood.lifecycle.docker_time import utc_datetime
from dood.lifecycle.handoff import describe as describe_handoff
from dood.lifecycle.handoff import waiters as handoff_waiters
from dood.lifecycle.outcome import RUNNING
from dood.lifecycle.owning_try import NO_TASK_INSTANCE
from dood.lifecycle.owning_try import run_state as airflow_run_state
from dood.lifecycle.owning_try import task_state as airflow_task_state
from dood.lifecycle.teardown import discard_all, note_stopping
from dood.naming import DEFAULT_STACK, HOST_LABEL, MANAGED_LABEL, STACK_LABEL, TASK_ID_LABEL, TaskIdentity

MISSING = NO_TASK_INSTANCE
ENDED_TASK_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})
ENDED_RUN_STATES = frozenset({"success", "failed"})
API_TIMEOUT_SECONDS = 120.0  # per REST call of the CLI: a busy api-server answers late, and a sweep is no hurry
STOP_WORKERS = 16  # Docker API calls at once while ending orphans (a wait holds one until its grace period ends)

#: The state of the task instance a container's labels name (`MISSING`: none).
TaskStateLookup = Callable[[Mapping[str, str]], "str | None"]
#: The state of the DAG run a container's labels name (`MISSING`: none).
RunStateLookup = Callable[[Mapping[str, str]], "str | None"]


@dataclass(frozen=True)
class Ownership:
    """Who a running container belongs to now: `orphan` says why nobody does (None: someone may still wait)."""

    owner: str
    orphan: str | None = None


def running_ownership(
    labels: Mapping[str, str], ti_state: str | None, task_state: TaskStateLookup, run_state: RunStateLookup
) -> Ownership:
    """The janitor's rule for a running container whose own task instance is in `ti_state` (the DooD page
    applies it too). `task_state` and `run_state` are asked only about handed-off containers."""
    if ti_state == MISSING:
        return Ownership("nobody", "its task instance no longer exists")
    if ti_state not in ENDED_TASK_STATES:
        return Ownership(f"its task ({ti_state or 'none'})")
    named = handoff_waiters(labels)
    if named is None:
        return Ownership("nobody", f"its task instance has ended ({ti_state})")
    handed = describe_handoff(labels)
    run = run_state(labels)
    if run == MISSING or run in ENDED_RUN_STATES:
        ended = "no longer exists" if run == MISSING else f"has ended ({run})"
        return Ownership("nobody", f"{handed}, but its DAG run {ended}")
    if not named:
        return Ownership(f"{handed} ({run})")
    states = {waiter: task_state({**labels, TASK_ID_LABEL: waiter}) for waiter in named}
    waiting = [f"{w} ({s or 'none'})" for w, s in states.items() if s != MISSING and s not in ENDED_TASK_STATES]
    if waiting:
        return Ownership(f"handed off to {', '.join(waiting)}")
    ended = ", ".join(f"{w}: {'no such task' if s == MISSING else s}" for w, s in states.items())
    return Ownership("nobody", f"{handed}, which ended ({ended})")


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
    run_state: RunStateLookup | None = None,
) -> list[Verdict]:
    """Which of these (inspected) containers of `stack` (and of Docker host `host`, when the deployment has
    several) to remove, and why. Pure: decides, touches nothing. Another stack's container is as foreign as
    one dood never made: its Airflow is not ours to ask; another host's is that host's janitor's.
    `run_state` defaults to `task_state.run_state` (`RestApiStates`, `task_sdk_states` have one)."""
    run_state = run_state or getattr(task_state, "run_state", None) or _no_run_state
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
            ownership = running_ownership(labels, task_state(labels), task_state, run_state)
            if ownership.orphan:
                verdicts.append(Verdict(container["Id"], name, ownership.orphan))
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
    run_state: RunStateLookup | None = None,
    workers: int = STOP_WORKERS,
    runs_root: str | None = None,
) -> list[Verdict]:
    """Find our stack's containers (of Docker host `host` only, when given; only those also carrying
    `only_labels`, when given), decide, and (unless dry run) stop and remove the orphans, their grace periods
    running at once (`workers` Docker calls at a time). With `runs_root`, each stop is noted in the
    container's run directory for the DooD page (`dood.lifecycle.teardown.note_stopping`). A stop that failed is
    logged, the others go on; the sweep then raises."""
    wanted = {**(only_labels or {}), MANAGED_LABEL: "true", STACK_LABEL: stack}
    if host is not None:
        wanted[HOST_LABEL] = host
    listed = api.containers(all=True, filters={"label": [f"{key}={value}" for key, value in wanted.items()]})
    inspected = [api.inspect_container(c["Id"]) for c in listed]
    verdicts = plan(
        inspected, task_state, ttl=ttl, now=datetime.now(timezone.utc), stack=stack, host=host, run_state=run_state
    )
    for verdict in verdicts:
        log(f"{'would remove' if dry_run else 'removing'} {verdict.name}: {verdict.reason}")
    if not dry_run and verdicts:
        if runs_root:
            for verdict in verdicts:
                note_stopping(runs_root, verdict.name, f"the janitor: {verdict.reason}", grace_seconds)
        signals = {c["Id"]: c["Config"].get("StopSignal") for c in inspected if c["Config"].get("StopSignal")}
        errors = discard_all(
            api, [v.container_id for v in verdicts], grace_seconds, workers=workers, stop_signals=signals
        )
        failed = [(verdict, exc) for verdict in verdicts if (exc := errors[verdict.container_id]) is not None]
        for verdict, exc in failed:
            log(f"could not remove {verdict.name}: {type(exc).__name__}: {exc}")
        if failed:
            raise failed[0][1]
    where = f" on host {host!r}" if host is not None else ""
    log(
        f"janitor: {len(listed)} containers of stack {stack!r}{where}, "
        f"{len(verdicts)} {'to remove' if dry_run else 'removed'}"
    )
    return verdicts


def _no_run_state(labels: Mapping[str, str]) -> str | None:
    raise TypeError(
        "janitor.plan: a handed-off container (label dood.handoff) needs run_state, the DAG run's state; "
        "pass run_state=, or a task_state lookup with a run_state method (RestApiStates, task_sdk_states)"
    )


class TaskSdkStates:
    """Task and DAG run states through the Task SDK (inside an Airflow task, e.g. the maintenance DAG)."""

    def __call__(self, labels: Mapping[str, str]) -> str | None:
        return airflow_task_state(TaskIdentity.from_labels(labels))

    def run_state(self, labels: Mapping[str, str]) -> str | None:
        return airflow_run_state(TaskIdentity.from_labels(labels))


task_sdk_states = TaskSdkStates()


class RestApiStates:
    """Task state through Airflow's public REST API (`/api/v2`), for the CLI outside Airflow."""

    def __init__(
        self,
        base_url: str,
        username: str | None,
        password: str | None,
        token: str | None = None,
        *,
        timeout_seconds: float = API_TIMEOUT_SECONDS,
    ):
        import httpx

        self.timeout_seconds = timeout_seconds
        self.client = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_seconds)
        if not token and username:
            response = self._call("POST", "/auth/token", json={"username": username, "password": password})
            response.raise_for_status()
            token = response.json()["access_token"]
        if token:
            self.client.headers["Authorization"] = f"Bearer {token}"

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One REST call; a timeout is said with the call and the fix (a busy api-server answers late)."""
        import httpx

        try:
            return getattr(self.client, method.lower())(path, **kwargs)
        except httpx.TimeoutException:
            raise DoodError(
                f"janitor: Airflow's REST API did not answer {method} {path} within {self.timeout_seconds:g} s: "
                "check the api-server, or give it longer with --api-timeout (this sweep removed nothing)"
            ) from None

    def __call__(self, labels: Mapping[str, str]) -> str | None:
        from urllib.parse import quote

        identity = TaskIdentity.from_labels(labels)
        path = "/api/v2/dags/{}/dagRuns/{}/taskInstances/{}".format(
            *(quote(value, safe="") for value in (identity.dag_id, identity.run_id, identity.task_id))
        )
        if identity.map_index != -1:
            path += f"/{identity.map_index}"
        response = self._call("GET", path)
        if response.status_code == 404:
            return MISSING
        response.raise_for_status()
        return response.json().get("state")

    def run_state(self, labels: Mapping[str, str]) -> str | None:
        from urllib.parse import quote

        identity = TaskIdentity.from_labels(labels)
        path = "/api/v2/dags/{}/dagRuns/{}".format(*(quote(v, safe="") for v in (identity.dag_id, identity.run_id)))
        response = self._call("GET", path)
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
    parser.add_argument(
        "--api-timeout",
        type=float,
        default=API_TIMEOUT_SECONDS,
        help=f"seconds each REST call may take (default {API_TIMEOUT_SECONDS:g}; a busy api-server answers late)",
    )
    parser.add_argument("--config", default=None, help="dood config (default: $DOOD_CONFIG)")
    parser.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE", help="only containers with this label too"
    )
    parser.add_argument(
        "--parallel", type=int, default=STOP_WORKERS, help="orphans stopped at once (each may take a grace period)"
    )
    args = parser.parse_args(argv)
    only_labels = dict(item.split("=", 1) for item in args.label)

    from dood.config.model import load_config
    from dood.hooks.dood import DoodHook

    config = load_config(args.config)
    hook = DoodHook(config)
    try:
        states = RestApiStates(args.api_url, args.username, args.password, args.token, timeout_seconds=args.api_timeout)
        sweep(
            hook.api,
            states,
            ttl=timedelta(hours=args.ttl_hours),
            dry_run=args.dry_run,
            grace_seconds=config.defaults.stop_grace_period_seconds,
            only_labels=only_labels,
            stack=hook.stack,
            host=config.host,
            workers=max(1, args.parallel),
            runs_root=config.runs_root,
        )
    except DoodError as exc:  # said in words (a REST call that timed out); a Docker error keeps its traceback
        print(exc, file=sys.stderr)
        return 1
    return 0


def _age(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} h" if hours >= 1 else f"{delta.total_seconds():.0f} s"


if __name__ == "__main__":
    sys.exit(main())
