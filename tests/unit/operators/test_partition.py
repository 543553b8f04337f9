from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from dood.operators.partition import partition_key

DIGEST = r"[0-9a-f]{32}"


def test_keyed_by_interval_and_run_id():
    start = datetime(2026, 11, 20, tzinfo=timezone.utc)
    key = partition_key("scheduled__2026-11-20T00:00:00+00:00", start, start + timedelta(days=1))
    assert re.fullmatch(rf"20261120T000000Z_20261121T000000Z__scheduled__2026-11-20T00-00-00-00-00-{DIGEST}", key)
    assert "/" not in key and ":" not in key and "+" not in key


def test_reruns_of_the_same_interval_never_share_a_partition():
    start = datetime(2026, 11, 20, tzinfo=timezone.utc)
    assert partition_key("manual__a", start) != partition_key("manual__b", start)


def test_consecutive_dates_are_distinct():
    base = datetime(2026, 11, 1, tzinfo=timezone.utc)
    keys = {partition_key(f"backfill__{i}", base + timedelta(days=i), base + timedelta(days=i + 1)) for i in range(7)}
    assert len(keys) == 7


def test_run_without_interval_reads_as_its_run_id_once():
    key = partition_key("manual__x")
    assert re.fullmatch(rf"manual__x-{DIGEST}", key)  # not manual__manual__x


@pytest.mark.parametrize(
    "run_id", ["2026-11-20", "20261120T000000Z_20261121T000000Z__manual__x", "___", ".", "/:+", ""]
)
def test_a_run_without_interval_never_takes_the_interval_form(run_id):
    key = partition_key(run_id)
    assert key[0].isalpha(), key  # the interval form starts with the year's digits
    assert re.fullmatch(rf"[A-Za-z][A-Za-z0-9_.-]*-?{DIGEST}", key)


def test_run_ids_whose_slugs_read_alike_are_told_apart_by_128_bits():
    same_slug = ["manual__a/b", "manual__a:b", "manual__a+b", "manual__a b"]
    keys = {partition_key(run_id) for run_id in same_slug}
    assert len(keys) == len(same_slug)
    assert all(re.fullmatch(rf"manual__a-b-{DIGEST}", key) for key in keys)
    long_a, long_b = "manual__" + "x" * 100 + "a", "manual__" + "x" * 100 + "b"  # differ past the slug's 60
    assert partition_key(long_a) != partition_key(long_b)


def test_the_longest_partition_is_a_name_dood_proxy_makes():
    from dood.proxy.directory_api import _NAME  # the proxy makes run partitions: its name rule, at most 128

    start = datetime(2026, 11, 20, tzinfo=timezone.utc)
    for run_id in ("scheduled__" + "x:" * 200, "_" + "y" * 300, ".hidden", "2026"):
        for key in (partition_key(run_id, start, start + timedelta(days=1)), partition_key(run_id)):
            assert _NAME.fullmatch(key), key
