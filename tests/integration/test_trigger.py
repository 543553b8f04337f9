"""DoodContainerTrigger on the real Docker engine, run with asyncio directly (no triggerer needed)."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import pytest

from dood.engine.target import DockerTarget
from dood.triggers.container import DoodContainerTrigger

DAG_ID = "dood_it_trigger"
DOCKER_SOCKET = "/var/run/docker.sock"


def wait_for(trigger, *, during=None, timeout=60):
    """Run the trigger to its one event (and `during()` alongside it); returns the payload."""

    async def main():
        async def collect():
            return [event.payload async for event in trigger.run()]

        task = asyncio.create_task(collect())
        if during is not None:
            await during()
        events = await asyncio.wait_for(task, timeout)
        assert len(events) == 1
        return events[0]

    return asyncio.run(main())


def trigger_for(cid, **kwargs):
    return DoodContainerTrigger(container_id=cid, target=DockerTarget(f"unix://{DOCKER_SOCKET}"), **kwargs)


def test_exit_0_is_success_with_dockers_exit_time(container):
    cid = container(["sh", "-c", "sleep 1"])
    started = time.time()
    payload = wait_for(trigger_for(cid))
    assert payload["status"] == "success"
    assert payload["container_id"] == cid
    assert payload["exit_code"] == 0
    assert payload["oom_killed"] is False
    assert started < payload["finished_at"] <= time.time()
    assert time.time() - payload["finished_at"] < 1  # reported from the event, not found by polling


def test_exit_3_is_failed_with_code_3(container):
    cid = container(["sh", "-c", "sleep 0.5; exit 3"])
    payload = wait_for(trigger_for(cid))
    assert payload["status"] == "failed"
    assert payload["exit_code"] == 3
    assert "exited with code 3" in payload["message"]


def test_container_that_ended_before_run_still_reports_its_outcome(container, docker_api):
    cid = container(["sh", "-c", "exit 5"])
    docker_api.wait(cid)
    finished = docker_api.inspect_container(cid)["State"]["FinishedAt"]
    payload = wait_for(trigger_for(cid))
    assert payload["status"] == "failed"
    assert payload["exit_code"] == 5
    assert time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(payload["finished_at"])) == finished[:19]


def test_oom_kill_is_reported(container):
    cid = container(["sh", "-c", "head -c 300m /dev/zero | tail"], mem_limit="32m")
    payload = wait_for(trigger_for(cid))
    assert payload["status"] == "failed"
    assert payload["oom_killed"] is True
    assert payload["exit_code"] == 137
    assert "out of memory" in payload["message"]


def test_deadline_gives_timeout_and_does_not_touch_the_container(container, docker_api):
    cid = container(["sleep", "30"])
    started = time.monotonic()
    payload = wait_for(trigger_for(cid, timeout_seconds=1))
    assert payload["status"] == "timeout"
    assert payload["exit_code"] is None
    assert 0.9 <= time.monotonic() - started < 3
    assert docker_api.inspect_container(cid)["State"]["Running"]


def test_deadline_already_passed_times_out_at_once(container):
    cid = container(["sleep", "30"])
    payload = wait_for(trigger_for(cid, deadline=time.time() - 1))
    assert payload["status"] == "timeout"


def test_a_trigger_owning_its_container_ends_it_at_the_deadline_and_says_so(container, docker_api):
    """The case of a slow worker: the deadline passed before the container started. The trigger fires at
    once and the container is stopped (`sleep` as PID 1 ignores SIGTERM: SIGKILL after the 1 s grace), then removed."""
    cid = container(["sleep", "30"])
    started = time.monotonic()
    payload = wait_for(trigger_for(cid, deadline=time.time() - 1, stop_grace_seconds=1))
    fired = time.monotonic() - started
    assert payload["status"] == "timeout"
    assert f"stopping container {cid[:12]} (grace 1s), then removing it" in payload["ending"]
    assert fired < 2, f"the event waited {fired:.1f}s for the teardown"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not docker_api.containers(all=True, filters={"id": cid}):
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"container {cid[:12]} still exists 30 s after the trigger fired at its deadline")
    print(f"fired after {fired:.2f}s, container gone after {time.monotonic() - started:.1f}s")


def test_container_removed_while_running_is_an_error(container, docker_api):
    cid = container(["sleep", "30"])

    async def remove_it():
        await asyncio.sleep(1)
        await asyncio.to_thread(docker_api.remove_container, cid, force=True)

    payload = wait_for(trigger_for(cid), during=remove_it)
    assert payload["status"] == "error"
    assert payload["exit_code"] == 137  # the die event Docker sent while removing it
    assert "removed" in payload["error_message"]


def test_container_removed_before_it_ever_ran_is_an_error(container, docker_api):
    cid = container(["true"], start=False)

    async def remove_it():
        await asyncio.sleep(1)
        await asyncio.to_thread(docker_api.remove_container, cid)

    payload = wait_for(trigger_for(cid), during=remove_it)
    assert payload["status"] == "error"
    assert payload["exit_code"] is None


def test_unknown_container_is_an_error():
    payload = wait_for(trigger_for("dood-it-trigger-no-such-container"))
    assert payload["status"] == "error"
    assert "removed" in payload["message"]


def test_die_of_an_earlier_run_is_not_taken_for_this_one(container, docker_api):
    cid = container(["sh", "-c", "sleep 1; exit 4"])
    docker_api.wait(cid)  # first run's die is now in Docker's replay buffer
    docker_api.start(cid)
    second_start = time.time()
    payload = wait_for(trigger_for(cid))
    assert payload["exit_code"] == 4
    assert payload["finished_at"] > second_start + 0.5


def test_unreachable_docker_is_an_error_after_the_retry_budget():
    trigger = DoodContainerTrigger(
        container_id="abc", target=DockerTarget("unix:///nonexistent/docker.sock"), retry_budget_seconds=1.5
    )
    started = time.monotonic()
    payload = wait_for(trigger)
    assert payload["status"] == "error"
    assert "unreachable" in payload["message"]
    assert 1.4 <= time.monotonic() - started < 5


def test_cancellation_closes_the_session(container):
    cid = container(["sleep", "30"])
    sessions = []

    class Recording(DoodContainerTrigger):
        def _docker(self):
            docker = super()._docker()
            sessions.append(docker)
            return docker

    async def main():
        task = asyncio.create_task(anext(aiter(Recording(container_id=cid).run())))
        await asyncio.sleep(1)
        assert not sessions[0].session.closed  # waiting on the open stream
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert len(sessions) == 1
    assert sessions[0].session.closed
    assert sessions[0].connector.closed


def test_on_kill_stops_and_removes_the_container(container, docker_api):
    cid = container(["sleep", "30"])
    asyncio.run(trigger_for(cid, stop_grace_seconds=1).on_kill())
    assert docker_api.containers(all=True, filters={"id": cid}) == []


def test_on_kill_without_grace_leaves_the_container(container, docker_api):
    cid = container(["sleep", "30"])
    asyncio.run(trigger_for(cid).on_kill())
    assert docker_api.inspect_container(cid)["State"]["Running"]


# -- a broken event stream: a socket proxy we can cut ------------------------------------------------


class CuttableProxy:
    """A unix-socket proxy to the Docker socket that can drop every connection and refuse new ones."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.refusing = False
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self):
        self._server = await asyncio.start_unix_server(self._serve, path=self.path)
        return self

    async def __aexit__(self, *exc):
        self.cut()
        self._server.close()

    def cut(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def _serve(self, reader, writer):
        if self.refusing:
            writer.close()
            return
        self.connections += 1
        up_reader, up_writer = await asyncio.open_unix_connection(DOCKER_SOCKET)
        self._writers += [writer, up_writer]
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)

    async def outage(self, seconds: float) -> None:
        """Drop all connections and refuse new ones for a while."""
        self.refusing = True
        self.cut()
        await asyncio.sleep(seconds)
        self.refusing = False


async def _pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


def run_through_proxy(cid, outage_after, outage_seconds, api_version="auto", **kwargs):
    socket_path = str(Path(tempfile.mkdtemp(prefix="dood-proxy-")) / "docker.sock")

    async def main():
        async with CuttableProxy(socket_path) as proxy:
            target = DockerTarget(f"unix://{socket_path}", api_version)
            trigger = DoodContainerTrigger(container_id=cid, target=target, **kwargs)
            task = asyncio.create_task(anext(aiter(trigger.run())))
            await asyncio.sleep(outage_after)
            await proxy.outage(outage_seconds)
            event = await asyncio.wait_for(task, 30)
            return event.payload, proxy.connections

    return asyncio.run(main())


def test_exit_during_an_outage_is_found_by_inspecting_on_reconnect(container):
    cid = container(["sh", "-c", "sleep 1.5; exit 3"])
    payload, connections = run_through_proxy(cid, outage_after=0.5, outage_seconds=2.5, api_version="1.41")
    assert payload["status"] == "failed"
    assert payload["exit_code"] == 3
    assert connections >= 3  # stream + inspect, then again after the outage


def test_exit_and_removal_during_an_outage_is_still_reported_from_the_replayed_die(container, docker_api):
    cid = container(["sh", "-c", "sleep 1; exit 3"])

    async def remove_when_exited():
        await asyncio.to_thread(docker_api.wait, cid)
        await asyncio.to_thread(docker_api.remove_container, cid)

    socket_path = str(Path(tempfile.mkdtemp(prefix="dood-proxy-")) / "docker.sock")

    async def main():
        async with CuttableProxy(socket_path) as proxy:
            trigger = DoodContainerTrigger(container_id=cid, target=DockerTarget(f"unix://{socket_path}", "1.41"))
            task = asyncio.create_task(anext(aiter(trigger.run())))
            await asyncio.sleep(0.5)
            await asyncio.gather(proxy.outage(2.5), remove_when_exited())
            return (await asyncio.wait_for(task, 30)).payload

    payload = asyncio.run(main())
    # inspect finds nothing on reconnect: only the die event Docker replays (since=) knows the exit code
    assert payload["status"] == "failed"
    assert payload["exit_code"] == 3
