from __future__ import annotations

from datetime import datetime, timedelta, timezone

from dood.partition import partition_key


def test_keyed_by_interval_and_run_id():
    start = datetime(2026, 11, 20, tzinfo=timezone.utc)
    key = partition_key("scheduled__2026-11-20T00:00:00+00:00", start, start + timedelta(days=1))
    assert key.startswith("20261120T000000Z_20261121T000000Z__scheduled__2026-11-20T00-00-00-00-00-")
    assert "/" not in key and ":" not in key and "+" not in key


def test_reruns_of_the_same_interval_never_share_a_partition():
    start = datetime(2026, 11, 20, tzinfo=timezone.utc)
    assert partition_key("manual__a", start) != partition_key("manual__b", start)


def test_consecutive_dates_are_distinct():
    base = datetime(2026, 11, 1, tzinfo=timezone.utc)
    keys = {partition_key(f"backfill__{i}", base + timedelta(days=i), base + timedelta(days=i + 1)) for i in range(7)}
    assert len(keys) == 7


def test_run_without_interval():
    assert partition_key("manual__x").startswith("manual__manual__x-")
