"""`python -m dood.hosts`: what a deployment with several Docker hosts derives from the one config.

- `queues [--host NAME]`: the Celery queues a host's worker listens on, comma-separated, for
  `airflow celery worker --queues "$(python -m dood.hosts queues)"` (default host: $DOOD_HOST).
- `pools`: every pool placement uses, as JSON for `airflow pools import` (run once by the stack's init,
  and again after a change of `hosts:`).
- `check`: the config loads for this host ($DOOD_HOST), and says which proxy it talks to.
- `ping [NAME...]`: reach each host's proxy the way another host does (`hosts.<name>.docker`, TLS included)
  and check it is that host's (its `--host`).
- `workers`: the queues placement uses that no live Celery worker listens on (their tasks stay queued until
  `[scheduler] task_queued_timeout`); needs the Celery provider and its broker (a worker or scheduler image).

Docs: docs/hosts.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dood.config.model import HOST_ENV_VAR, load_config
from dood.config.placement import Placement, place, pools, queues_without_worker, worker_queues
from dood.exceptions import DoodConfigError, DoodError
from dood.mounts.run_directories import proxy_info

if TYPE_CHECKING:
    from dood.config.endpoints import DockerEndpoint
    from dood.config.model import DoodConfig


def task_placement(
    *,
    host: str | None,
    hosts: Iterable[str] | None,
    host_labels: Mapping[str, str] | None,
    placement: Placement | None,
    config_path: str | None,
    what: str,
) -> Placement | None:
    """An operator's placement: given resolved (the DAG factory's), or resolved here from `host`, `hosts` or
    `host_labels` against the config's `hosts:` (read at DAG parse time, like the pipelines)."""
    asked = [name for name, value in (("host", host), ("hosts", hosts), ("host_labels", host_labels)) if value]
    if placement is not None:
        if asked:
            raise DoodConfigError(f"{what}: give placement or {', '.join(asked)}, not both")
        return placement
    if not asked:
        return None
    try:
        return place(load_config(config_path, view=False).hosts, host=host, names=hosts, labels=host_labels)
    except ValueError as exc:
        raise DoodConfigError(f"{what}: {exc}") from None


def apply_placement(placement: Placement | None, kwargs: dict[str, Any], what: str) -> None:
    """Set the task's Celery queue and pool from its placement; a different queue or pool given by hand is
    refused (a task has one of each, and the placement's are what take it to, and bound, its hosts)."""
    if placement is None:
        return
    for key, value in (("queue", placement.queue), ("pool", placement.pool)):
        given = kwargs.get(key)
        if given not in (None, value):
            raise DoodConfigError(
                f"{what}: {key}={given!r} contradicts its placement on {placement.describe()}; drop {key} (the "
                f"placement sets it) or the placement"
            )
        kwargs[key] = value


def remote_view(config: DoodConfig, name: str) -> DoodConfig:
    """The view of host `name` as a process on another host has it: its network endpoint (`docker`)."""
    view = config.on_host(name)
    return view.model_copy(update={"docker": view.reachable_docker})


def endpoint_from_here(name: str) -> DockerEndpoint | None:
    """How this process reaches host `name` by its own dood config: the host's local proxy when this process is
    on it ($DOOD_HOST), else its network endpoint; None when this config does not know the host (or has none).
    A deferred wait asks so in the triggerer: the certificates, or the proxy's address, may differ there (or
    have changed since the task deferred) from what the task that launched the container saw."""
    config = load_config()
    if name not in config.hosts:
        return None
    return config.docker if config.host == name else remote_view(config, name).docker


def check_proxy_host(api, config: DoodConfig, what: str) -> None:
    """Refuse to launch through a dood-proxy that is another host's (`--host`): a worker whose endpoint
    points at the wrong machine would create there, under that host's label, out of its own lookups' sight."""
    if config.host is None:
        return
    theirs = (proxy_info(api, config.docker.url) or {}).get("host")
    if theirs is not None and theirs != config.host:
        raise DoodConfigError(
            f"{what}: this worker is on host {config.host!r} ($DOOD_HOST) but {config.docker.url} is the dood-proxy "
            f"of host {theirs!r}; fix hosts.{config.host}.local_docker / docker in the dood config, or $DOOD_HOST."
        )


def active_queues() -> dict[str, list[str]]:
    """Celery's live workers and their queues (`celery inspect active_queues`), through Airflow's Celery app."""
    try:
        from airflow.providers.celery.executors.celery_executor import app
    except ImportError:
        raise DoodConfigError(
            "workers: the Celery provider is not installed here (run it in a worker's image)"
        ) from None
    try:
        answer = app.control.inspect(timeout=5).active_queues() or {}
    except Exception as exc:  # noqa: BLE001 - kombu's connection errors vary by transport
        raise DoodError(f"workers: cannot ask Celery ({app.conf.broker_url}): {exc}") from None
    return {worker: [queue["name"] for queue in queues] for worker, queues in answer.items()}


def _ping(config: DoodConfig, names: Sequence[str]) -> int:
    from dood.hooks.dood import DoodHook

    failed = 0
    for name in names:
        try:
            view = remote_view(config, name)
            api = DoodHook(view).api
            check_proxy_host(api, view, f"host {name}")
            info = proxy_info(api, view.docker.url) or {}
            who = f"dood-proxy of stack {info.get('stack')!r}" if info else "a Docker daemon, not a dood-proxy"
            print(f"{name}: OK at {view.docker.url} ({who})")
        except (DoodError, DoodConfigError) as exc:
            failed += 1
            print(f"{name}: FAILED at {config.hosts[name].docker.url if name in config.hosts else '?'}: {exc}")
    return 1 if failed else 0


def check_delivered(placement: Placement | None, config: DoodConfig, what: str) -> None:
    """Refuse, before anything is created, a task that Celery delivered to a worker on a host it is not
    placed on: the worker's $DOOD_HOST, or the queues it listens on, are wrong."""
    if placement is None or config.host in placement.hosts:
        return
    here = f"host {config.host!r} ($DOOD_HOST)" if config.host else "no host ($DOOD_HOST is unset)"
    raise DoodConfigError(
        f"{what}: placed on {placement.describe()}, but the worker that took it from queue {placement.queue} is "
        f"on {here}; nothing was created. A worker listens on a queue of hosts it is not on: give each worker "
        f'the $DOOD_HOST of its own host and `--queues "$(python -m dood.hosts queues)"` (docs/hosts.md).'
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dood.hosts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="dood config (default: $DOOD_CONFIG)")
    commands = parser.add_subparsers(dest="command", required=True)
    queues = commands.add_parser("queues", help="the queues of a host's Celery worker, comma-separated")
    queues.add_argument("--host", default=os.environ.get(HOST_ENV_VAR), help="host name (default: $DOOD_HOST)")
    commands.add_parser("pools", help="the pools placement uses, as JSON for `airflow pools import`")
    commands.add_parser("check", help="load the config as this host ($DOOD_HOST) sees it")
    ping = commands.add_parser("ping", help="reach hosts' proxies over their network endpoints (TLS)")
    commands.add_parser("workers", help="the hosts' queues no live Celery worker listens on")
    ping.add_argument("names", nargs="*", help="host names (default: every host)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        if args.command == "queues":
            if not args.host:
                raise DoodConfigError(f"queues: name the host with --host or ${HOST_ENV_VAR}")
            config = config.on_host(args.host)
            print(",".join(worker_queues(args.host, config.hosts, config.pipelines)))
        elif args.command == "pools":
            print(json.dumps(pools(config.hosts, config.pipelines), indent=2))
        elif args.command == "ping":
            return _ping(config, args.names or sorted(config.hosts))
        elif args.command == "workers":
            missing = queues_without_worker(config.hosts, config.pipelines, active_queues())
            for queue, names in missing.items():
                print(f"queue {queue}: no live worker; tasks placed on {', '.join(names)} stay queued")
            if not missing:
                print("every host's queue has a live worker")
            return 1 if missing else 0
        else:
            where = f"host {config.host!r}" if config.host else "a single Docker host (no $DOOD_HOST)"
            print(f"dood config OK: {where}, Docker at {config.docker.url}, stack {config.stack!r}")
    except DoodError as exc:  # a config error, Celery out of reach
        print(f"dood.hosts: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
