"""The shared event stream's bookkeeping, without an engine: who gets which event, once."""

from __future__ import annotations

import asyncio

from dood.triggers import event_hub
from dood.triggers.event_hub import EventHub, Feed

FULL_ID = "ab12" * 16


def die(container_id: str = FULL_ID, name: str = "/train-1", at: int = 1) -> dict:
    return {"Action": "die", "timeNano": at, "Actor": {"ID": container_id, "Attributes": {"name": name}}}


def test_a_feed_takes_its_container_by_full_id_short_id_or_name():
    for key in (FULL_ID, FULL_ID[:12], "train-1", "/train-1"):
        assert Feed(key).matches(FULL_ID, "train-1"), key
    assert not Feed("train-2").matches(FULL_ID, "train-1")
    assert not Feed("train").matches(FULL_ID, "train-1")  # a name is never a prefix
    assert not Feed("cd34").matches(FULL_ID, "train-1")


async def _drain(feed: Feed) -> list[dict]:
    feed.end()
    return [event async for event in feed]


def test_an_event_reaches_every_feed_of_its_container_once_and_a_later_feed_from_the_replay():
    async def main():
        hub = EventHub(lambda: None)
        hub._reader = asyncio.create_task(asyncio.sleep(60))  # an open stream
        hub._connecting = asyncio.get_running_loop().create_future()
        hub._connecting.set_result(None)
        async with hub.feed(FULL_ID) as first, hub.feed("other") as other:
            hub._carry(die())
            hub._carry(die())  # a reconnect's replay repeats it
            hub._carry(die(at=2))
            async with hub.feed("train-1") as late:
                got = await _drain(first), await _drain(other), await _drain(late)
        hub._reader.cancel()
        return got

    first, other, late = asyncio.run(main())
    assert [event["timeNano"] for event in first] == [1, 2]
    assert other == []
    assert [event["timeNano"] for event in late] == [1, 2]


def test_the_replay_forgets_events_older_than_the_margin(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(event_hub.time, "monotonic", lambda: clock[0])
    hub = EventHub(lambda: None)
    hub._carry(die(at=1))
    clock[0] += event_hub.REPLAY_MARGIN_SECONDS + 10
    hub._carry(die(at=2))
    assert [event["timeNano"] for _, event in hub._recent] == [2]
    hub._carry(die(at=1))  # forgotten, so carried again (a later feed inspects and skips older runs)
    assert len(hub._recent) == 2


def test_a_feed_ended_by_a_broken_stream_stays_ended():
    async def main():
        feed = Feed(FULL_ID)
        feed.end()
        return [e async for e in feed], [e async for e in feed]

    assert asyncio.run(main()) == ([], [])
