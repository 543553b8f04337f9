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


def test_a_subscription_nobody_answers_is_retried_and_the_wait_ends_as_unreachable(tmp_path, monkeypatch):
    """A peer that accepts and never answers (a hung proxy) must not hold every wait of the endpoint forever."""
    from dood.triggers import events
    from dood.triggers.container import DoodContainerTrigger

    monkeypatch.setattr(events, "ANSWER_SECONDS", 0.3)
    socket_path = str(tmp_path / "silent.sock")
    accepted = []

    async def main():
        async def never_answer(reader, writer):
            accepted.append(writer)

        server = await asyncio.start_unix_server(never_answer, path=socket_path)
        trigger = DoodContainerTrigger(container_id="abc", docker_url=f"unix://{socket_path}", retry_budget_seconds=1.5)
        try:
            return (await asyncio.wait_for(anext(aiter(trigger.run())), 20)).payload
        finally:
            server.close()

    payload = asyncio.run(main())
    assert payload["status"] == "error"
    assert "unreachable" in payload["message"] and "TimeoutError" in payload["message"]
    assert len(accepted) >= 2  # asked again after each silence


class FakeSession:
    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True


def test_renewed_certificate_files_make_a_new_session_and_end_the_old_streams_feeds():
    """A triggerer running for months: its waits must pick up a renewed client certificate, not the old one."""
    made: list[FakeSession] = []
    files = ["v1"]

    def make() -> FakeSession:
        made.append(FakeSession())
        return made[-1]

    async def main():
        hub = EventHub(make, lambda: files[0])
        hub._reader = asyncio.create_task(asyncio.sleep(60))  # an open stream on the first session
        hub._connecting = asyncio.get_running_loop().create_future()
        hub._connecting.set_result(None)
        await hub._renew_session()
        unchanged = (len(made), hub.docker is made[0])
        files[0] = "v2"  # renewed on disk
        reader = hub._reader
        await hub._renew_session()
        return unchanged, reader.cancelled(), hub.docker is made[-1]

    unchanged, old_stream_ended, new_session = asyncio.run(main())
    assert unchanged == (1, True)
    assert len(made) == 2 and made[0].closed and not made[1].closed
    assert old_stream_ended and new_session


def test_a_certificate_file_missing_for_a_moment_keeps_the_session():
    made: list[FakeSession] = []

    def missing():
        raise FileNotFoundError("cert.pem")

    hub = EventHub(lambda: made.append(FakeSession()) or made[-1], lambda: "v1")
    hub._credentials = missing
    asyncio.run(hub._renew_session())
    assert len(made) == 1 and not made[0].closed
