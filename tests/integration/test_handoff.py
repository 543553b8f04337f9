"""A container handed off (wait=False) belongs to the sensor waiting for it, under a real scheduler: a
training started by `start`, waited for by a rescheduling `DoodContainerSensor`, while the janitor sweeps
the run every few seconds, from inside the run (Task SDK lookups, as the maintenance DAG) and from outside
(the REST API, as `dood-janitor`). The training ends by itself, the sensor succeeds with its result, and the
engine's own events show nobody stopped it; an orphan of the same run, planted as a control, is removed by
the same sweeps (they were live, not idle). The training ends when the test opens its gate: once the control is
gone, the sensor has poked it as still running, the janitor task runs and five outside sweeps saw it.
DAG: scheduled_dags/dood_sched_handoff.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import timedelta

from dood.janitor import RestApiStates, sweep
from dood.lifecycle.handoff import HANDOFF_LABEL
from tests.integration.airflow_stack import MAIN_ENGINE_URL, EngineEvents, engine_containers
from tests.integration.conftest import TEST_IMAGE

DAG_ID = "dood_sched_handoff"


PAGE_ROW = """
import json, sys
from dood.ui.rows import TaskKey, build_row
from dood.ui.task_states import task_states
entry = json.loads(sys.stdin.read())
key = TaskKey.from_labels(entry["Labels"])
print(json.dumps(build_row(entry, ti_state=task_states([key])[key]).as_json()))
"""


def page_row(stack, entry: dict) -> dict:
    """The DooD page's row of this `docker ps` entry, built in a process that reads the stack's database."""
    done = subprocess.run(
        [sys.executable, "-c", PAGE_ROW], input=json.dumps(entry), env=stack.env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:g}s waiting for {what}"
        time.sleep(0.5)


def test_a_handed_off_training_outlives_its_start_task_under_a_sweeping_janitor(airflow_stack, docker_api):
    gate = airflow_stack.home / "marks" / f"{DAG_ID}.go"
    gate.unlink(missing_ok=True)
    events = EngineEvents(MAIN_ENGINE_URL, DAG_ID)
    control = None
    try:
        run_id = airflow_stack.trigger(DAG_ID)
        wait_for(lambda: airflow_stack.task(DAG_ID, run_id, "start")["state"] == "success", 120, "start to succeed")
        training = [c for c in engine_containers(docker_api, DAG_ID) if c["Labels"].get("dood.task_id") == "start"]
        assert len(training) == 1 and training[0]["State"] == "running", training
        training_id = training[0]["Id"]
        inspected = docker_api.inspect_container(training_id)
        assert inspected["Config"]["Labels"][HANDOFF_LABEL] == "wait"  # the sensor found downstream
        assert inspected["HostConfig"]["Init"] is True  # defaults.init: SIGTERM reaches the step

        # The control: running, of the same run, not handed off, of a task instance Airflow does not have (map
        # index 5 of `start`; the sensor looks for map index -1): an orphan the sweeps must remove.
        labels = {**training[0]["Labels"], "dood.map_index": "5"}
        del labels[HANDOFF_LABEL]
        control = docker_api.create_container(TEST_IMAGE, ["sleep", "300"], labels=labels)["Id"]
        docker_api.start(control)

        # The DooD page's view of it, from Airflow's database as the api-server reads it: not an orphan.
        row = page_row(airflow_stack, docker_api.containers(filters={"id": training_id})[0])
        assert row["orphan"] is False and row["owner"].startswith("handed off to wait ("), row
        assert row["ti_state"] == "success", row

        rest = RestApiStates(airflow_stack.api_url, None, None)
        scope = {"dood.dag_id": DAG_ID, "dood.run_id": run_id}
        removed_from_outside: list[str] = []
        sweeps_seeing_it, sensor_poked, janitor_ran = 0, False, False
        deadline = time.monotonic() + 200
        while airflow_stack.run_state(DAG_ID, run_id) not in ("success", "failed"):
            assert time.monotonic() < deadline, f"run {run_id} still {airflow_stack.run_state(DAG_ID, run_id)}"
            verdicts = sweep(
                docker_api, rest, ttl=timedelta(hours=24), dry_run=False, grace_seconds=2, only_labels=scope
            )
            removed_from_outside += [f"{v.name}: {v.reason}" for v in verdicts]
            if not gate.exists():  # the training still waits: note what has seen it running
                alive = docker_api.containers(filters={"id": training_id, "status": "running"})
                assert alive, f"the training ended before the gate opened: {docker_api.inspect_container(training_id)}"
                sweeps_seeing_it += 1
                sensor_poked |= airflow_stack.task(DAG_ID, run_id, "wait")["state"] == "up_for_reschedule"
                janitor_ran |= airflow_stack.task(DAG_ID, run_id, "janitor")["state"] == "running"
                control_gone = not docker_api.containers(all=True, filters={"id": control})
                if sweeps_seeing_it >= 5 and sensor_poked and janitor_ran and control_gone:
                    gate.touch()  # the training writes its result and ends by itself
            time.sleep(3)
        assert gate.exists(), (
            f"gate never opened: sweeps {sweeps_seeing_it}, sensor {sensor_poked}, janitor {janitor_ran}"
        )

        if airflow_stack.run_state(DAG_ID, run_id) != "success":
            logs = {
                task: airflow_stack.task_log(
                    DAG_ID, run_id, airflow_stack.task(DAG_ID, run_id, task)["try_number"], task
                )
                for task in ("start", "wait", "janitor")
            }
            raise AssertionError(f"run {run_id} did not succeed; task logs:\n" + "\n".join(logs.values()))
        assert airflow_stack.xcom(DAG_ID, run_id, "wait") == {"done": True}
        sensor_tries = airflow_stack.task(DAG_ID, run_id, "wait")["try_number"]
        print(f"sensor tries: {sensor_tries} (more than 1: apache/airflow#71172 failed a poke; the retry found it)")
        removed_inside = airflow_stack.xcom(DAG_ID, run_id, "janitor")
        removed = removed_inside + removed_from_outside
        assert not any(line.startswith(training[0]["Names"][0].lstrip("/")) for line in removed), removed
        assert not docker_api.containers(all=True, filters={"id": control}), "the control orphan was not removed"
        assert any("its task instance no longer exists" in line for line in removed), removed

        mine = [e for e in events.events if e.get("id") == training_id]
        actions = [e.get("Action") for e in mine]
        assert "die" in actions, f"no die event of the training: {actions}"
        before_die = actions[: actions.index("die")]
        assert not {"kill", "stop", "destroy"} & set(before_die), f"the training was stopped: {actions}"
        die = mine[actions.index("die")]
        assert die["Actor"]["Attributes"].get("exitCode") == "0", die
    finally:
        events.stop()
        if control is not None:
            try:
                docker_api.remove_container(control, force=True)
            except Exception:  # noqa: BLE001 - removed by the janitor, as intended
                pass
