"""The daemon's clock offset, read from `GET /info`'s `SystemTime` in any zone Docker writes it."""

from __future__ import annotations

import pytest

from dood.gpus.engine_clock import offset_of

UTC_NOON = 1_796_212_800.0  # 2026-12-02T12:00:00Z


@pytest.mark.parametrize(
    "system_time, expected",
    [
        ("2026-12-02T12:00:00.250000000Z", UTC_NOON + 0.25),
        ("2026-12-02T13:00:00.5+01:00", UTC_NOON + 0.5),
        ("2026-12-02T12:00:00Z", UTC_NOON),
        ("2026-12-02T07:00:00-05:00", UTC_NOON),
    ],
)
def test_the_offset_is_the_daemon_time_less_the_middle_of_our_request(system_time, expected):
    assert offset_of(system_time, UTC_NOON - 1, UTC_NOON + 1) == pytest.approx(expected - UTC_NOON)


def test_an_unreadable_time_gives_no_offset():
    assert offset_of(None, 10.0, 12.0) == 0.0
    assert offset_of("yesterday", 10.0, 12.0) == 0.0
