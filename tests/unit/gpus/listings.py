"""Entries of the engine's container list, as GPU holders and queue tickets appear in it (unit tests' data)."""

from __future__ import annotations

from dood.gpus.holdings import GPUS_LABEL
from dood.gpus.queue import TICKET_FOR_LABEL, TICKET_LABEL, TICKET_UNTIL_LABEL, TICKET_WANTS_LABEL, ticket_key

NOW = 1_800_000_000.0


def holder_entry(cid: str, state: str, gpus: str, created: float = NOW - 600, **labels: str) -> dict:
    return {
        "Id": cid * 8,
        "Names": [f"/{cid}"],
        "State": state,
        "Created": int(created),
        "Labels": {GPUS_LABEL: gpus, **labels},
    }


def ticket_entry(key: int, wants: str, until: float = NOW + 60, cid: str | None = None, waiter: str = "") -> dict:
    labels = {
        TICKET_LABEL: ticket_key(key),
        TICKET_WANTS_LABEL: wants,
        TICKET_UNTIL_LABEL: f"{until:.3f}",
        TICKET_FOR_LABEL: waiter,
    }
    return {"Id": cid or f"t{key}-{until}", "Names": [f"/ticket-{key}"], "State": "created", "Labels": labels}
