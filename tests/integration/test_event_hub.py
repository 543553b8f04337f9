"""The waits of one process share one event stream per endpoint (dood.triggers.event_hub), on the real engine."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from dood.engine.target import DockerTarget
from dood.triggers.container import DoodContainerTrigger
from dood.triggers.event_hub import _hubs
from tests.integration.test_trigger import CuttableProxy, trigger_for


async def _event(trigger: DoodContainerTrigger) -> dict:
    return (await anext(aiter(trigger.run()))).payload


def test_twenty_waits_share_one_stream_and_each_gets_its_own_exit(container):
    ids = [container(["sh", "-c", f"sleep 1.5; exit {code}"]) for code in range(20)]
    socket_path = str(Path(tempfile.mkdtemp(prefix="dood-hub-")) / "docker.sock")

    async def main():
        async with CuttableProxy(socket_path) as proxy:
            target = DockerTarget(f"unix://{socket_path}")
            triggers = [DoodContainerTrigger(container_id=cid, target=target) for cid in ids]
            payloads = await asyncio.wait_for(asyncio.gather(*map(_event, triggers)), 60)
            hubs_left = dict(_hubs.get(asyncio.get_running_loop(), {}))
            return payloads, proxy.connections, hubs_left

    payloads, connections, hubs_left = asyncio.run(main())
    assert [(p["status"], p["exit_code"], p["container_id"]) for p in payloads] == [
        ("success" if code == 0 else "failed", code, cid) for code, cid in enumerate(ids)
    ]
    # one stream and at most one inspect connection per wait; a stream per wait took 20 + 20
    assert connections <= 1 + 20, connections
    assert hubs_left == {}  # closed with its last wait


def test_a_wait_that_joins_later_gets_its_containers_exit_from_the_shared_streams_replay(container, docker_api):
    keeper = container(["sleep", "30"])  # its wait keeps the shared stream open
    quick = container(["sh", "-c", "exit 7"])

    async def main():
        keeping = asyncio.create_task(_event(trigger_for(keeper, timeout_seconds=20)))
        await asyncio.sleep(1)  # the stream is open
        await asyncio.to_thread(docker_api.wait, quick)
        await asyncio.sleep(0.5)  # its die is carried by the stream
        await asyncio.to_thread(docker_api.remove_container, quick)
        late = await asyncio.wait_for(_event(trigger_for(quick)), 10)
        keeping.cancel()
        return late

    late = asyncio.run(main())
    # inspect finds nothing: only the stream's recent events know the exit code
    assert (late["status"], late["exit_code"]) == ("failed", 7)


def test_a_broken_shared_stream_ends_every_feed_and_every_wait_inspects_again(container):
    ids = [container(["sh", "-c", f"sleep 1.5; exit {code}"]) for code in (3, 4, 5)]
    socket_path = str(Path(tempfile.mkdtemp(prefix="dood-hub-")) / "docker.sock")

    async def main():
        async with CuttableProxy(socket_path) as proxy:
            triggers = [
                DoodContainerTrigger(container_id=cid, target=DockerTarget(f"unix://{socket_path}", "1.41"))
                for cid in ids
            ]
            waiting = asyncio.gather(*map(_event, triggers))
            await asyncio.sleep(0.5)
            await proxy.outage(2.5)  # the exits happen while nothing answers
            return await asyncio.wait_for(waiting, 30)

    payloads = asyncio.run(main())
    assert [(p["status"], p["exit_code"]) for p in payloads] == [("failed", 3), ("failed", 4), ("failed", 5)]
