"""Checkpoint directories under a real scheduler (tests/integration/airflow_stack.py: scheduler, dag-processor,
triggerer, api-server; DAGs in scheduled_dags/dood_sched_checkpoint.py and dood_sched_checkpoint_gated.py): a
training SIGKILLed at epoch k resumes there in its retry and trains only the epochs left, ending with an
uninterrupted run's predictions, and its directory is gone after success; a training whose *worker* is SIGKILLed
at epoch k is adopted by the retry and loses no epoch; two mapped indexes never share a directory; a backfill of
3 dates has 3; a clear starts from an empty one. What the engine and the filesystem show is what counts, never
what dood says it did. The gated DAGs' containers wait for a file the test makes, never for a fixed time.
`DOOD_CHECKPOINT_CLEAR_REPEATS=10` repeats the clear case, `DOOD_CHECKPOINT_WORKER_KILL_REPEATS` the worker's kill
(default 1)."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from docker.errors import NotFound

from dood.mounts.checkpoints import CHECKPOINT_DIR_IN_CONTAINER
from tests.integration.airflow_stack import MAIN_ENGINE_URL, EngineEvents, engine_containers

EPOCHS = 6  # as in scheduled_dags/dood_sched_checkpoint.py
KILL_AT = 3
GATED_EPOCHS, GATED_AT = 5, 2  # as in scheduled_dags/dood_sched_checkpoint_gated.py
CLEAR_REPEATS = range(int(os.environ.get("DOOD_CHECKPOINT_CLEAR_REPEATS", "1")))
WORKER_KILL_REPEATS = range(int(os.environ.get("DOOD_CHECKPOINT_WORKER_KILL_REPEATS", "1")))


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


@pytest.mark.parametrize("repeat", CLEAR_REPEATS)
def test_a_clear_starts_from_an_empty_directory(airflow_stack, docker_api, repeat):
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


def gate(stack, name: str) -> Path:
    """The file a gated DAG's containers wait for (scheduled_dags/dood_sched_checkpoint_gated.py), closed."""
    path = stack.home / "marks" / name
    path.unlink(missing_ok=True)
    return path


def log_of_try(stack, dag_id: str, run_id: str, try_number: int) -> str:
    """The try's task log, or "" while the API has none yet."""
    try:
        return stack.task_log(dag_id, run_id, try_number)
    except AssertionError:
        return ""


def story(stack, events: EngineEvents, dag_id: str, run_id: str, since: float) -> str:
    """What the engine and both tries' logs say, for a failure message: every container event of the DAG
    (seconds after `since`, the kill), then each try's log tail."""
    lines = ["engine events (s after the worker's SIGKILL):"]
    for event in list(events.events):
        attributes = event.get("Actor", {}).get("Attributes", {})
        detail = {k: attributes[k] for k in ("signal", "exitCode", "dood.try_number") if k in attributes}
        at = event.get("timeNano", 0) / 1e9 - since
        lines.append(f"  {at:+8.1f} {event.get('Action')} {attributes.get('name', '?')} {detail}")
    for number in (1, 2):
        lines.append(f"--- try {number}'s log (tail):\n{log_of_try(stack, dag_id, run_id, number)[-2500:]}")
    return "\n".join(lines)


@pytest.mark.parametrize("repeat", WORKER_KILL_REPEATS)
def test_the_worker_sigkilled_at_epoch_k_the_retry_adopts_the_training_and_no_epoch_is_lost(
    airflow_stack, docker_api, repeat
):
    """The worker (task runner and supervisor) dies while the training waits after epoch k; the scheduler
    times its heartbeat out and starts try 2, which takes the still-running container over (one container in
    all): the training goes on from epoch k in the same process, every epoch trained once, and the task
    instance's one checkpoint directory is gone after success. A failure prints the engine's events of the DAG
    and both tries' logs."""
    dag_id = "dood_sched_checkpoint_worker"
    opened = gate(airflow_stack, "checkpoint-worker.go")
    events = EngineEvents(MAIN_ENGINE_URL, dag_id)
    killed_at = time.time()
    try:
        run_id = airflow_stack.trigger(dag_id)
        container = wait_for(lambda: run_container(docker_api, dag_id, run_id), 120, f"{run_id}'s training container")
        wait_for_line(docker_api, container, f"held after epoch {GATED_AT}", 120)
        task = airflow_stack.wait_for_task(dag_id, run_id, ("running",))
        path = checkpoint_dir_of(airflow_stack.task_log(dag_id, run_id, 1))
        saved = json.loads((Path(path) / "state.json").read_text())
        assert saved["epoch"] == GATED_AT, f"the checkpoint at the kill holds {saved}"

        runner = airflow_stack.task_runner(task["id"])
        supervisor = runner.parent()
        killed_at = time.time()
        for process in (supervisor, runner):  # stopped first, so neither acts on the other's death...
            process.suspend()
        for process in (supervisor, runner):  # ...then SIGKILLed: nobody reports the try's end
            process.kill()

        deadline = time.monotonic() + 150
        while "Reattaching to container" not in log_of_try(airflow_stack, dag_id, run_id, 2):
            if time.monotonic() > deadline or len(events.of("create")) > 1:
                pytest.fail(
                    "waited for try 2 (after the heartbeat timeout) to take the held container over; "
                    f"{len(events.of('create'))} container(s) created\n"
                    + story(airflow_stack, events, dag_id, run_id, killed_at)
                )
            time.sleep(1)
        state = docker_api.inspect_container(container["Id"])["State"]
        assert state["Running"], f"the training stopped meanwhile: {state}\n" + story(
            airflow_stack, events, dag_id, run_id, killed_at
        )
        opened.touch()

        final = airflow_stack.wait_for_task(dag_id, run_id, ("success", "failed"), timeout=120)
    finally:
        opened.touch()
        told = story(airflow_stack, events, dag_id, run_id, killed_at) if "run_id" in locals() else ""
        events.stop()
    try_2 = airflow_stack.task_log(dag_id, run_id, 2)
    assert final["state"] == "success" and final["try_number"] == 2, f"{final}\n{told}"
    assert len(events.of("create")) == 1, f"try 2 must adopt the running training, not start another\n{told}"
    assert f"Reattaching to container {container['Names'][0].lstrip('/')} of try 1" in try_2, told
    result = airflow_stack.xcom(dag_id, run_id)
    assert (result["resumed_from_epoch"], result["epochs_run"]) == (0, GATED_EPOCHS), (
        f"one process trained every epoch, none lost to the worker's death: {result}"
    )
    logged = [int(n) for n in re.findall(rf"epoch (\d+)/{GATED_EPOCHS}: ", try_2)]
    assert sorted(set(logged)) == list(range(1, GATED_EPOCHS + 1)), f"try 2 followed epochs {logged}"
    assert f"Checkpoint removed: {path}" in try_2, try_2[-3000:]
    assert not Path(path).exists(), f"the checkpoint directory {path} is still there after success"


def dag_parsed(stack, dag_id: str) -> bool:
    try:
        stack.api("GET", f"/dags/{dag_id}")
        return True
    except AssertionError:
        return False


def runs_of(stack, dag_id: str, run_type: str) -> list[dict]:
    return [r for r in stack.api("GET", f"/dags/{dag_id}/dagRuns")["dag_runs"] if r["run_type"] == run_type]


def checkpoint_sources(docker_api, container: dict) -> list[str]:
    return [
        mount["Source"]
        for mount in docker_api.inspect_container(container["Id"])["Mounts"]
        if mount["Destination"] == CHECKPOINT_DIR_IN_CONTAINER
    ]


@pytest.mark.timeout(600)
def test_a_backfill_of_3_dates_gives_3_checkpoint_directories(airflow_stack, docker_api):
    """All 3 backfilled trainings held at once: 3 containers mount 3 directories (read from the engine), the
    3 on disk, each with its own run's mark; all gone after the runs succeeded."""
    dag_id = "dood_sched_checkpoint_backfill"
    opened = gate(airflow_stack, "checkpoint-backfill.go")
    try:
        airflow_stack._wait_until(lambda: dag_parsed(airflow_stack, dag_id), 120, f"{dag_id} to be parsed")
        airflow_stack.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})  # paused DAGs run no task
        # Unpaused, the scheduler makes today's scheduled run (held too) at once; a backfill created in the same
        # moment can crash Airflow 3.3's scheduler on SQLite (StaleDataError, test_backfill_bound.py): so after it
        airflow_stack._wait_until(lambda: runs_of(airflow_stack, dag_id, "scheduled"), 120, f"{dag_id}'s scheduled run")
        body = {"dag_id": dag_id, "from_date": "2026-01-01T00:00:00Z", "to_date": "2026-01-03T00:00:00Z"}
        for _ in range(60):  # SQLite answers 503 "Database is locked" while the scheduler writes: ask again
            try:
                airflow_stack.api("POST", "/backfills", json={**body, "max_active_runs": 3})
                break
            except AssertionError as exc:
                if " 503 " not in str(exc):
                    raise
                time.sleep(0.5)
        else:
            pytest.fail("the backfill could not be created: SQLite stayed locked for 30 s")

        def held() -> dict[str, list[str]] | None:
            running = {
                c["Labels"]["dood.run_id"]: c
                for c in engine_containers(docker_api, dag_id)
                if c["State"] == "running" and c["Labels"]["dood.run_id"].startswith("backfill__")
            }
            if len(running) < 3:
                return None
            sources = {run: checkpoint_sources(docker_api, c) for run, c in running.items()}
            marked = all(len(s) == 1 and (Path(s[0]) / "mine").exists() for s in sources.values())
            return sources if marked else None

        found: dict[str, dict[str, list[str]]] = {}

        def all_held() -> bool:  # through the stack's wait: it starts a crashed scheduler again
            found["sources"] = held() or {}
            return bool(found["sources"])

        airflow_stack._wait_until(
            all_held, 240, "3 backfill containers held, each having marked its checkpoint directory", every=0.2
        )
        sources = found["sources"]
        paths = {run: Path(mounts[0]) for run, mounts in sources.items()}
        assert len(set(paths.values())) == 3, f"the backfilled runs share checkpoint directories: {paths}"
        task_dirs = {path.parent for path in paths.values()}
        assert len(task_dirs) == 1, f"one task, one task directory: {task_dirs}"
        on_disk = {p for p in next(iter(task_dirs)).iterdir() if p.name.startswith("run-backfill__")}
        assert on_disk == set(paths.values()), f"on disk {sorted(on_disk)}, mounted {sorted(paths.values())}"
        for run, path in paths.items():
            assert (path / "mine").read_text().strip() == run, f"{path} holds another run's mark"
        opened.touch()

        def backfill_done() -> list[dict] | None:
            backfilled = runs_of(airflow_stack, dag_id, "backfill")
            finished = len(backfilled) == 3 and all(r["state"] in ("success", "failed") for r in backfilled)
            return backfilled if finished else None

        airflow_stack._wait_until(lambda: backfill_done() is not None, 180, "the 3 backfill runs to finish", every=1)
        backfilled = backfill_done() or []
    finally:
        opened.touch()
    assert [r["state"] for r in backfilled] == ["success"] * 3, backfilled
    left = [str(path) for path in paths.values() if path.exists()]
    assert not left, f"checkpoint directories left after success: {left}"
