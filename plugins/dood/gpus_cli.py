"""`dood-gpus`: the Docker host's GPUs, each free or held by which container (dag/task/run/try).

Reads the inventory from the dood config and the holdings from the engine (labels and state); changes
nothing. `--json` prints the same as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from dood.gpus import Holder, held_by


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


def render(host: str, devices: Sequence[str], holding: Sequence[Holder]) -> str:
    rows = table(devices, holding)
    free = sum(1 for row in rows if row["state"] == "free")
    lines = [f"GPUs of {host}: {len(devices)} in gpus.devices, {free} free, {len(rows) - free} held"]
    if not devices:
        lines.append("  (gpus.devices is empty: GPU requests are refused until it lists the host's GPUs)")
    width = max([3, *(len(row["gpu"]) for row in rows)])
    for row in rows:
        holder = row.get("holder")
        note = "" if row["listed"] else "  (not in gpus.devices)"
        shown = f"held by {holder['description']}" if holder else "free"
        lines.append(f"  GPU {row['gpu']:<{width}}  {shown}{note}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dood-gpus", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="dood config (default: $DOOD_CONFIG, else config/dood.yaml)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)

    from docker.errors import DockerException

    from dood.config import load_config
    from dood.exceptions import DoodError
    from dood.gpu_claims import GpuClaims
    from dood.hooks.dood import DoodHook

    try:
        config = load_config(args.config)
        holding = GpuClaims.of(DoodHook(config).api, config, image="").holding()
    except (DoodError, DockerException) as exc:
        print(f"dood-gpus: {exc}", file=sys.stderr)
        return 1
    host, devices = config.docker.url, config.gpus.devices
    print(
        json.dumps({"host": host, "gpus": table(devices, holding)}, indent=2)
        if args.json
        else render(host, devices, holding)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
