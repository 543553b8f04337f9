"""Checkpoint directories under a real scheduler (tests/integration/airflow_stack.py: scheduler, dag-processor,
triggerer, api-server; DAGs in scheduled_dags/dood_sched_checkpoint.py): a training SIGKILLed at epoch k resumes
there in its retry and trains only the epochs left, ending with an uninterrupted run's predictions, and its
directory is gone after success; two mapped indexes never share a directory; a clear starts from an empty one.
What the engine and the filesystem show is what counts, never what dood says it did."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from docker.errors import NotFound

from tests.integration.airflow_stack import MAIN_ENGINE_URL, EngineEvents, engine_containers

EPOCHS = 6  # as in scheduled_dags/dood_sched_checkpoint.py
KILL_AT = 3


def wait_for(condition, timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what}")


def run_container(docker_api, dag_id: str, run_id: str) -> dict | None:
    """The running container of this DAG run, if there is one."""
    for container in engine_containers(docker_api, dag_id):
        if container["Labels"].get("dood.run_id") == run_id and container["State"] == "running":
            return container
    return None


def wait_for_line(docker_api, container: dict, line: str, timeout: float) -> None:
    """Wait for `line` in the container's output; a container gone meanwhile fails saying what the engine saw
    (on a shared engine, another session's cleanup can remove it)."""
    name = container["Names"][0]
    events = EngineEvents(MAIN_ENGINE_URL, container["Labels"]["dood.dag_id"])
    try:

        def seen() -> bool:
            try:
                return line in docker_api.logs(container["Id"]).decode(errors="replace")
            except NotFound:
                happened = [
                    (e.get("Action"), e.get("Actor", {}).get("Attributes", {}).get("signal")) for e in events.events
                ]
                pytest.fail(f"{name} vanished while waiting for {line!r}; the engine's events since: {happened}")

        wait_for(seen, timeout, f"the {line!r} line of {name}")
    finally:
        events.stop()


def checkpoint_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "Checkpoint" in line]


def checkpoint_dir_of(log: str) -> str:
    """The checkpoint's host path, as the task log names it at start."""
    found = re.search(r"Checkpoint (/\S+) at start", log)
    assert found, f"the task log names no checkpoint directory:\n{log[-3000:]}"
    return found.group(1)


def test_a_training_killed_at_epoch_k_resumes_there_and_ends_like_an_uninterrupted_one(airflow_stack, docker_api):
    dag_id = "dood_sched_checkpoint_training"
    killed = airflow_stack.trigger(dag_id)
    whole = airflow_stack.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None})["dag_run_id"]

    container = wait_for(lambda: run_container(docker_api, dag_id, killed), 120, f"{killed}'s training container")
    wait_for_line(docker_api, container, f"epoch {KILL_AT}/{EPOCHS}", 120)
    docker_api.kill(container["Id"], signal="SIGKILL")

    final = airflow_stack.wait_for_task(dag_id, killed, ("success", "failed"), timeout=240)
    try_1 = airflow_stack.task_log(dag_id, killed, 1)
    try_2 = airflow_stack.task_log(dag_id, killed, 2) if final["try_number"] >= 2 else ""
    assert final["state"] == "success" and final["try_number"] == 2, f"{final}\n{try_1[-3000:]}\n{try_2[-3000:]}"
    assert "Checkpoint kept for the next try" in try_1, try_1[-3000:]
    assert f"resumed from epoch {KILL_AT}" in try_2, try_2[-4000:]
    run_epochs = sorted({int(n) for n in re.findall(rf"epoch (\d+)/{EPOCHS}: ", try_2)})
    assert run_epochs == list(range(KILL_AT + 1, EPOCHS + 1)), f"try 2 trained epochs {run_epochs}"
    path = checkpoint_dir_of(try_2)
    assert checkpoint_dir_of(try_1) == path, "both tries must mount the task instance's one directory"
    start_line = next(line for line in checkpoint_lines(try_2) if "at start" in line)
    assert "checkpoint.joblib" in start_line and "file(s)" in start_line, start_line

    resumed = airflow_stack.xcom(dag_id, killed)
    assert (resumed["resumed_from_epoch"], resumed["epochs_run"]) == (KILL_AT, EPOCHS - KILL_AT), resumed

    airflow_stack.wait_for_task(dag_id, whole, ("success", "failed"), timeout=240)
    uninterrupted = airflow_stack.xcom(dag_id, whole)
    assert uninterrupted["resumed_from_epoch"] == 0 and uninterrupted["epochs_run"] == EPOCHS, uninterrupted
    assert resumed["predictions_sha256"] == uninterrupted["predictions_sha256"], (
        "the resumed model predicts otherwise than the uninterrupted one"
    )

    assert not Path(path).exists(), f"the checkpoint directory {path} is still there after success"
    assert f"Checkpoint removed: {path}" in try_2
    assert not Path(checkpoint_dir_of(airflow_stack.task_log(dag_id, whole, 1))).exists()


def test_two_mapped_indexes_never_share_a_directory(airflow_stack, docker_api):
    dag_id = "dood_sched_checkpoint_mapped"
    run_id = airflow_stack.trigger(dag_id)
    path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances"

    def finished():
        tis = airflow_stack.api("GET", path)["task_instances"]
        states = [ti["state"] for ti in tis]
        return tis if len(tis) == 2 and all(s in ("success", "failed") for s in states) else None

    tis = wait_for(finished, 180, f"both mapped indexes of {run_id} to finish")
    assert [ti["state"] for ti in tis] == ["success", "success"], tis
    kept = {}
    for index in (0, 1):
        log = airflow_stack.api(
            "GET",
            f"{path}/run/logs/1",
            params={"full_content": "true", "map_index": index},
            headers={"Accept": "application/json"},
        )["content"]
        found = re.search(r"Checkpoint kept as (/\S+)", str(log))
        assert found, f"map index {index}: no kept checkpoint in its log:\n{str(log)[-3000:]}"
        kept[index] = Path(found.group(1))
        assert "at start: empty" in str(log), f"map index {index} did not start from an empty directory"
    assert kept[0] != kept[1]
    assert (kept[0] / "mine").read_text() == "index-0\n"
    assert (kept[1] / "mine").read_text() == "index-1\n"


def test_a_clear_starts_from_an_empty_directory(airflow_stack, docker_api):
    dag_id = "dood_sched_checkpoint_clear"
    run_id = airflow_stack.trigger(dag_id)
    container = wait_for(lambda: run_container(docker_api, dag_id, run_id), 120, "try 1's container")
    wait_for_line(docker_api, container, "started try 1", 60)

    airflow_stack.clear_task(dag_id, run_id)

    final = airflow_stack.wait_for_task(dag_id, run_id, ("success", "failed"), timeout=180)
    try_2 = airflow_stack.task_log(dag_id, run_id, final["try_number"])
    assert final["state"] == "success" and final["try_number"] == 2, f"{final}\n{try_2[-3000:]}"
    assert airflow_stack.xcom(dag_id, run_id) == {"try": 2, "found": 0}, try_2[-3000:]
    try_1_dir = checkpoint_dir_of(airflow_stack.task_log(dag_id, run_id, 1))
    assert checkpoint_dir_of(try_2) != try_1_dir, "the try after a clear must get a new directory"
    assert not Path(try_1_dir).exists(), "the cleared generation's directory must go once the task succeeded"
