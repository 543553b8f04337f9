"""Docker's times (dood.lifecycle.docker_time): RFC 3339 with nanoseconds, offsets, epoch numbers, and the zero time."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from dood.lifecycle.docker_time import epoch_ns, epoch_seconds, utc_datetime


def test_docker_times_parse_to_epoch_nanoseconds():
    assert epoch_ns("2026-11-27T20:03:37.097271035Z") == 1_795_809_817_097_271_035
    assert epoch_ns("2026-11-27T20:03:37Z") == 1_795_809_817_000_000_000
    assert epoch_ns("2026-11-27T21:03:37.5+01:00") == 1_795_809_817_500_000_000
    assert epoch_ns("0001-01-01T00:00:00Z") == 0
    assert epoch_ns(None) == 0


@pytest.mark.parametrize("unreadable", [None, "", "yesterday", "0001-01-01T00:00:00Z"])
def test_never_or_unreadable_is_none(unreadable):
    assert epoch_seconds(unreadable) is None
    assert utc_datetime(unreadable) is None


def test_ps_epoch_numbers_and_inspect_strings_agree():
    assert epoch_seconds(1_795_809_817) == 1_795_809_817.0
    assert epoch_seconds("2026-11-27T20:03:37Z") == 1_795_809_817.0
    assert utc_datetime("2026-11-27T21:03:37.25+01:00") == datetime(2026, 11, 27, 20, 3, 37, 250000, timezone.utc)
    assert utc_datetime(1_795_809_817) == datetime(2026, 11, 27, 20, 3, 37, tzinfo=timezone.utc)
