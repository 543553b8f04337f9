"""Where one pipeline run writes: its own partition, keyed by data interval and run id.

A pure function of the run's context, so every step of a run (on any worker) finds the same
directory, and reruns, retries and backfills of other dates never share one.
"""

from __future__ import annotations

import hashlib
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
#: Bits of the run id's SHA-256 in a partition's name: the slug alone is cut and lossy (`a/b` and `a:b`
#: read alike), so the digest is what keeps two runs apart; 128 bits, where 32 collided in 0.1 s of search.
DIGEST_HEX = 32
SLUG_CHARS = 60


def partition_key(run_id: str, interval_start=None, interval_end=None) -> str:
    """`<start>_<end>__<run id slug>-<hash>`; `<run id slug>-<hash>` when a run has no interval.

    The interval form always starts with a digit (the year); the other always with a letter (`run-` is put
    before a run id whose slug does not), so the two forms never meet. The hash is 128 bits of the run id's
    SHA-256 (hex): two run ids share a partition only if they share those bits, not by any search.
    """
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:DIGEST_HEX]
    slug = _UNSAFE.sub("-", run_id).strip("-")[:SLUG_CHARS].rstrip("-")
    run_part = f"{slug}-{digest}" if slug else digest
    if interval_start is None:
        return run_part if slug[:1].isalpha() else f"run-{run_part}"
    end = interval_end or interval_start
    return f"{interval_start:%Y%m%dT%H%M%SZ}_{end:%Y%m%dT%H%M%SZ}__{run_part}"


def partition_from_context(context) -> str:
    return partition_key(context["run_id"], context.get("data_interval_start"), context.get("data_interval_end"))
