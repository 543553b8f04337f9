"""`dood-gpus`: the Docker host's GPUs, each free or held by which container (dag/task/run/try).

Reads the inventory from the dood config (`gpus.devices`), or, when that is empty, as discovered through the
engine (`dood.gpus.discovery`), and says which; the holdings come from the engine (labels and state).
Changes nothing, except `--rediscover` (probes the engine again). `--json` prints the same as one object.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from dood.gpus.discovery import Discovered
from dood.gpus.holdings import Holder, held_by

CONFIG = Discovered((), "config")


def table(devices: Sequence[str], holding: Sequence[Holder]) -> list[dict[str, Any]]:
    """One row per GPU of the inventory, then any GPU held that the inventory does not list."""
    taken = held_by(holding)
    rows = []
    for gpu in [*devices, *sorted(set(taken) - set(devices))]:
        holder = taken.get(gpu)
        row: dict[str, Any] = {"gpu": gpu, "state": "held" if holder else "free", "listed": gpu in devices}
        if holder:
            row["holder"] = {
                "container_id": holder.container_id,
                "container_name": holder.name,
                "container_state": holder.state,
                "description": holder.describe(),
                **{key.removeprefix("dood."): value for key, value in holder.labels.items() if key.startswith("dood.")},
            }
        rows.append(row)
    return rows


def render(host: str, devices: Sequence[str], holding: Sequence[Holder], found: Discovered = CONFIG) -> str:
    rows = table(devices, holding)
    free = sum(1 for row in rows if row["state"] == "free")
    where = "in gpus.devices" if found.source == "config" else "discovered"
    lines = [f"GPUs of {host}: {len(devices)} {where}, {free} free, {len(rows) - free} held"]
    lines.append(f"  inventory: {found.describe()}")
    width = max([3, *(len(row["gpu"]) for row in rows)])
    for row in rows:
        holder = row.get("holder")
        note = "" if row["listed"] else f"  (not in {'gpus.devices' if found.source == 'config' else 'the inventory'})"
        shown = f"held by {holder['description']}" if holder else "free"
        lines.append(f"  GPU {row['gpu']:<{width}}  {shown}{note}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dood-gpus", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="dood config (default: $DOOD_CONFIG, else config/dood.yaml)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--rediscover", action="store_true", help="probe the engine's GPUs again (when gpus.devices is empty)"
    )
    args = parser.parse_args(argv)

    from docker.errors import DockerException

    from dood.config.model import load_config
    from dood.exceptions import DoodError
    from dood.gpus.claims import GpuClaims
    from dood.gpus.discovery import discover
    from dood.hooks.dood import DoodHook

    try:
        config = load_config(args.config)
        api, host, gpus = DoodHook(config).api, config.docker.url, config.gpus
        user = config.policy.allowed_users[0]  # the probe runs as an identity the policy allows
        again = args.rediscover
        found = CONFIG if gpus.devices else discover(api, host, image=gpus.probe_image, again=again, user=user)
        holding = GpuClaims.of(api, config, image="").holding()
    except (DoodError, DockerException) as exc:
        print(f"dood-gpus: {exc}", file=sys.stderr)
        return 1
    devices = gpus.devices or found.devices
    inventory = {"source": found.source, "described": found.describe(), "uuids": list(found.uuids)}
    print(
        json.dumps({"host": host, "inventory": inventory, "gpus": table(devices, holding)}, indent=2)
        if args.json
        else render(host, devices, holding, found)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
