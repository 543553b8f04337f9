"""`python -m dood.hosts`: what a deployment with several Docker hosts derives from the one config.

- `queues [--host NAME]`: the Celery queues a host's worker listens on, comma-separated, for
  `airflow celery worker --queues "$(python -m dood.hosts queues)"` (default host: $DOOD_HOST).
- `pools`: every pool placement uses, as JSON for `airflow pools import` (run once by the stack's init,
  and again after a change of `hosts:`).
- `check`: the config loads for this host ($DOOD_HOST), and says which proxy it talks to.

Docs: docs/hosts.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from dood.config import HOST_ENV_VAR, load_config
from dood.exceptions import DoodConfigError
from dood.placement import pools, worker_queues


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dood.hosts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="dood config (default: $DOOD_CONFIG)")
    commands = parser.add_subparsers(dest="command", required=True)
    queues = commands.add_parser("queues", help="the queues of a host's Celery worker, comma-separated")
    queues.add_argument("--host", default=os.environ.get(HOST_ENV_VAR), help="host name (default: $DOOD_HOST)")
    commands.add_parser("pools", help="the pools placement uses, as JSON for `airflow pools import`")
    commands.add_parser("check", help="load the config as this host ($DOOD_HOST) sees it")
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
        else:
            where = f"host {config.host!r}" if config.host else "a single Docker host (no $DOOD_HOST)"
            print(f"dood config OK: {where}, Docker at {config.docker.url}, stack {config.stack!r}")
    except DoodConfigError as exc:
        print(f"dood.hosts: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
