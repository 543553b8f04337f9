"""Where one pipeline run writes: its own partition, keyed by data interval and run id.

A pure function of the run's context, so every step of a run (on any worker) finds the same
directory, and reruns, retries and backfills of other dates never share one.
"""

from __future__ import annotations

import hashlib
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def partition_key(run_id: str, interval_start=None, interval_end=None) -> str:
    """`<start>_<end>__<run id slug>-<hash>`; `manual__<run id slug>-<hash>` when a run has no interval."""
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    run_part = f"{_UNSAFE.sub('-', run_id).strip('-')[:60]}-{digest}"
    if interval_start is None:
        return f"manual__{run_part}"
    end = interval_end or interval_start
    return f"{interval_start:%Y%m%dT%H%M%SZ}_{end:%Y%m%dT%H%M%SZ}__{run_part}"


def partition_from_context(context) -> str:
    return partition_key(context["run_id"], context.get("data_interval_start"), context.get("data_interval_end"))
