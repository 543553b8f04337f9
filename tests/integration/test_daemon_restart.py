"""The Docker daemon restarts while a task waits for its container, under a real scheduler (issue 10, item 4).

The daemon is the tests' own second dockerd (`second_engine.py`), never the main engine; dood's config
for these DAGs (`scheduled_dags/dood_sched_restart.py`) points docker.url at its socket. Both modes
(blocking, deferrable) x live-restore on / off:

- with live-restore the container survives; dood waits for the daemon, re-attaches, and the task succeeds
  in try 1 with that container's result; one container ever, removed;
- without, the daemon's shutdown kills it (exit 137); try 1 fails saying so, Airflow retries, try 2 runs a
  fresh container and succeeds; two containers ever, both removed.

Containers are counted from the engine's events, recorded by a stream that reconnects across the restart
(the daemon keeps its events in memory only), and from its labels.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.integration.airflow_stack import EngineEvents, engine_containers
from tests.integration.second_engine import SecondEngine

IMAGE = "dood-test-busybox:latest"
SHUTDOWN_TIMEOUT = 2  # the daemon's SIGTERM -> SIGKILL on shutdown; `sh` as PID 1 ignores SIGTERM: 137
SHUTDOWN_NOTE = "killed by the Docker daemon's shutdown"


class Engines:
    """The second engine, (re)started with or without live-restore as a test asks."""

    current: SecondEngine | None = None

    def use(self, live_restore: bool) -> SecondEngine:
        if self.current is not None and self.current.live_restore == live_restore:
            return self.current
        self.stop()
        engine = SecondEngine.for_session(
            role="restart", subnet=215, live_restore=live_restore, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        engine.start()
        self.current = engine
        engine.load_image(IMAGE)
        return engine

    def stop(self) -> None:
        if self.current is not None:
            self.current.stop()
            self.current = None


@pytest.fixture(scope="module")
def engines(docker_api):
    if os.geteuid() != 0:
        pytest.skip("these tests start a second dockerd (own bridge, data root, socket): that needs root")
    holder = Engines()
    try:
        yield holder
    finally:
        holder.stop()


def write_config(stack, engine: SecondEngine) -> None:
    (stack.home / "dood-restart.yaml").write_text(
        f"runs_root: {stack.home / 'runs'}\n"
        "mount_discovery: {mode: 'off'}\n"
        f"docker: {{url: '{engine.url}', unreachable_timeout_seconds: 120}}\n"
        f"policy:\n  allowed_host_roots: ['{stack.home}']\n"
    )


def wait_for_running(api, dag_id: str, timeout: float = 120) -> dict:
    """Try 1's container, running (a try Airflow itself lost on this loaded machine is not what is tested)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [
            c
            for c in engine_containers(api, dag_id)
            if c["State"] == "running" and c["Labels"].get("dood.try_number") == "1"
        ]
        if running:
            return running[0]
        time.sleep(0.2)
    pytest.fail(f"no running container of {dag_id} on the second engine within {timeout:g}s")


def leftovers(api, dag_id: str, timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        left = engine_containers(api, dag_id)
        if not left or time.monotonic() > deadline:
            return [f"{c['Names'][0]} {c['Status']}" for c in left]
        time.sleep(0.25)


@pytest.mark.parametrize(
    ("mode", "live_restore"),
    [("blocking", False), ("deferrable", False), ("blocking", True), ("deferrable", True)],
    ids=["blocking-no-live-restore", "deferrable-no-live-restore", "blocking-live-restore", "deferrable-live-restore"],
)
def test_daemon_restarted_mid_run(airflow_stack, engines, mode, live_restore):
    engine = engines.use(live_restore)
    write_config(airflow_stack, engine)
    dag_id = f"dood_sched_restart_{mode}"
    api = engine.api()
    events = EngineEvents(engine.url, dag_id)
    try:
        run_id = airflow_stack.trigger(dag_id)
        wait_for_running(api, dag_id)
        airflow_stack.wait_for_task(dag_id, run_id, ("deferred",) if mode == "deferrable" else ("running",))
        time.sleep(2)  # the wait (attach, or the trigger's event stream) is under way

        engine.restart()

        final = airflow_stack.wait_for_task(dag_id, run_id, ("success", "failed"), timeout=240)
        api = engine.api()
        left = leftovers(api, dag_id)
    finally:
        events.stop()

    try_log = airflow_stack.task_log(dag_id, run_id, 1)
    assert final["state"] == "success", try_log[-3000:]
    assert left == [], f"left behind: {left}"
    created = {event["id"] for event in events.of("create")}
    assert created == {event["id"] for event in events.of("destroy")}, "every container is removed"
    exit_codes = [int(event["Actor"]["Attributes"]["exitCode"]) for event in events.of("die")]
    assert "does not exist in this" not in try_log  # the socket exists; the daemon was restarting
    if live_restore:
        assert final["try_number"] == 1
        assert airflow_stack.xcom(dag_id, run_id) == {"done": True, "try": 1}  # the container that survived
        assert len(created) == 1
        assert exit_codes == [0]
        assert "training-done" in try_log  # its output after the restart reached the task log
    else:
        assert final["try_number"] == 2
        assert airflow_stack.xcom(dag_id, run_id) == {"done": True, "try": 2}
        assert len(created) == 2  # try 2 ran a fresh container
        assert exit_codes == [143, 0]  # SIGTERM reached the step (Docker's init, defaults.init), no SIGKILL needed
        assert SHUTDOWN_NOTE in try_log
