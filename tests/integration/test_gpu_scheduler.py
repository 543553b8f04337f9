"""Deferrable GPU tasks under a real scheduler (LocalExecutor, triggerer, api-server; airflow_stack.py) on the
second engine with the fake NVIDIA hook and 4 GPUs: 8 `gpus: 1` tasks at once never run more than 4
containers, two running ones never share a GPU (the hook's record), all succeed, and the ones that found
no free GPU waited deferred, in the triggerer (no worker slot). Then mixed sizes (2, 1, 1, all, 1, 2).
Every step holds its GPUs until the test has seen each task either holding GPUs (a running container) or
waiting deferred; then the test opens the DAG's gate (dood_sched_gpus.py) and the steps end as GPUs free.

Containers and GPUs are counted from the engine (start/die events, the hook's records), task states from
the REST API, never from what dood says it did.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
import time

import pytest

from tests.integration.airflow_stack import SCHEDULED_DAGS, AirflowStack, stack_env
from tests.integration.gpu_fixtures import GPU_TEST_IMAGE  # noqa: F401  (loaded on the engine by gpu_engine)
from tests.ports import free_port

INVENTORY = ["0", "1", "2", "3"]
MIXED = {"two_a": 2, "one_a": 1, "one_b": 1, "all": "all", "one_c": 1, "two_b": 2}  # as in dood_sched_gpus.py


@pytest.fixture(scope="module")
def gpu_stack(tmp_path_factory, gpu_engine):
    """Airflow's services with only the GPU DAGs, dood pointed at the second engine and its 4 GPUs."""
    home = tmp_path_factory.mktemp("airflow-gpu-stack")
    os.chmod(home, 0o755)
    (home / "dags").mkdir()
    shutil.copy(SCHEDULED_DAGS / "dood_sched_gpus.py", home / "dags")
    (home / "marks").mkdir()  # the gates the steps wait for
    os.chmod(home / "marks", 0o777)
    port = free_port()
    env = stack_env(home, port)
    # eight task starts at once against one api-server on SQLite, on a loaded 2-core machine: its 5 s default
    # per Execution API call was seen to run out (the supervisor then gives up on the task before it runs)
    env["AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT"] = "60"
    stack = AirflowStack(home, f"http://127.0.0.1:{port}", env)
    (home / "dood.yaml").write_text(
        f"docker:\n  url: {gpu_engine.url}\nruns_root: {home / 'runs'}\nmount_discovery: {{mode: 'off'}}\n"
        f"gpus:\n  devices: {INVENTORY}\npolicy:\n  allow_gpus: true\n  allowed_host_roots: ['{home}']\n"
    )
    _clean(gpu_engine)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        _clean(gpu_engine)


def _clean(engine) -> None:
    api = engine.api()
    for container in api.containers(all=True):
        api.remove_container(container["Id"], force=True)


class StateWatch:
    """Every state each task instance of a run was seen in, read in a thread from the stack's SQLite file
    (read-only, WAL: it never blocks the scheduler), not through the single api-server worker, which
    eight task starts at once already keep busy."""

    def __init__(self, stack: AirflowStack, dag_id: str, run_id: str) -> None:
        self.database = f"file:{stack.home / 'airflow.db'}?mode=ro"
        self.dag_id, self.run_id = dag_id, run_id
        self.seen: dict[str, set[str]] = {}
        self.run_state: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                with sqlite3.connect(self.database, uri=True, timeout=5) as db:
                    query = "SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ?"
                    for task_id, state in db.execute(query, (self.dag_id, self.run_id)):
                        self.seen.setdefault(task_id, set()).add(state)
                    (self.run_state,) = db.execute(
                        "SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", (self.dag_id, self.run_id)
                    ).fetchone()
            except sqlite3.Error:
                pass  # busy a moment: look again
            time.sleep(0.3)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _run(stack: AirflowStack, engine, dag_id: str, tasks: int):
    since = time.time() - 1
    run_id = stack.trigger(dag_id)
    watch = StateWatch(stack, dag_id, run_id)
    api = engine.api()
    holding: list[str] = []

    def all_hold_or_wait() -> bool:
        """Every task holds GPUs (its container runs, waiting at the gate) or waits deferred, at least one."""
        running = api.containers(filters={"label": f"dood.dag_id={dag_id}", "status": "running"})
        holding[:] = sorted(c["Labels"]["dood.task_id"] for c in running)
        waiting = {task for task, states in watch.seen.items() if "deferred" in states} - set(holding)
        return bool(waiting) and len(holding) + len(waiting) == tasks

    try:
        try:
            stack._wait_until(all_hold_or_wait, 600, "", every=1)
        except pytest.fail.Exception:
            what = f"every task of {dag_id} to hold GPUs or wait deferred"
            pytest.fail(f"timed out after 600s waiting for {what}; holding {holding}, seen {watch.seen}")
        (stack.home / "marks" / f"{dag_id}.go").touch()  # the gate: the steps end, the waiting ones get GPUs
        stack._wait_until(lambda: watch.run_state in ("success", "failed"), 600, f"{dag_id} to finish", every=1)
    finally:
        watch.stop()
    assert len(watch.seen) == tasks, watch.seen
    final = {task: ti["state"] for task, ti in _task_instances(stack, dag_id, run_id).items()}
    assert final == dict.fromkeys(final, "success"), (final, stack.log_tail("scheduler"))
    events = list(
        engine.api().events(
            since=int(since),
            until=int(time.time()) + 1,
            filters={"type": "container", "event": ["start", "die"], "label": [f"dood.dag_id={dag_id}"]},
            decode=True,
        )
    )
    return run_id, watch.seen, events


def _task_instances(stack: AirflowStack, dag_id: str, run_id: str) -> dict[str, dict]:
    for _ in range(10):  # the api-server may still be slow to answer right after the run
        try:
            listed = stack.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
            return {ti["task_id"]: ti for ti in listed}
        except Exception:  # noqa: BLE001 - a read timeout or SQLite's 503: ask again
            time.sleep(3)
    pytest.fail("the REST API did not list the task instances")


def _waited_deferred(stack: AirflowStack, dag_id: str) -> list[str]:
    """The tasks whose log shows a GPU wait spent deferred: "Waiting for … GPU…", then "Pausing task as
    DEFERRED" with no claim in between, and a claim after it (made when the task resumed on a worker)."""
    found = []
    for log in (stack.home / "logs" / f"dag_id={dag_id}").glob("run_id=*/task_id=*/attempt=*.log"):
        text = log.read_text(errors="replace")
        waiting = text.find('"event":"Waiting for ')
        deferred = text.find("Pausing task as DEFERRED", waiting)
        claimed = text.find("Claimed GPU(s)", waiting)
        if -1 < waiting < deferred < claimed:
            found.append(log.parent.name.removeprefix("task_id="))
    return sorted(found)


def _intervals(engine, events):
    """(task, gpus given by the engine, start ns, die ns) per container, from the events and the hook's record."""
    starts = {e["id"]: e for e in events if e["Action"] == "start"}
    dies = {e["id"]: e for e in events if e["Action"] == "die"}
    found = []
    for cid, start in starts.items():
        assert cid in dies, f"container {cid[:12]} never ended"
        task = start["Actor"]["Attributes"]["dood.task_id"]
        found.append((task, engine.gpus_given(cid), start["timeNano"], dies[cid]["timeNano"]))
    return found


def _most_at_once(events) -> int:
    running, most = 0, 0
    for event in sorted(events, key=lambda e: (e["timeNano"], e["Action"] == "start")):
        running += 1 if event["Action"] == "start" else -1
        most = max(most, running)
    return most


def _assert_disjoint(intervals) -> None:
    for i, (task_a, gpus_a, start_a, end_a) in enumerate(intervals):
        for task_b, gpus_b, start_b, end_b in intervals[i + 1 :]:
            if start_a < end_b and start_b < end_a:
                assert not set(gpus_a) & set(gpus_b), f"{task_a} {gpus_a} and {task_b} {gpus_b} ran at once"


@pytest.mark.timeout(1200)
def test_eight_deferrable_one_gpu_tasks_on_four_gpus(gpu_stack, gpu_engine):
    dag_id = "dood_sched_gpus_eight"
    run_id, seen, events = _run(gpu_stack, gpu_engine, dag_id, 8)
    intervals = _intervals(gpu_engine, events)
    assert len(intervals) == 8  # one container per task: a deferral creates nothing
    assert all(len(gpus) == 1 and gpus[0] in INVENTORY for _, gpus, _, _ in intervals), intervals
    assert _most_at_once(events) <= 4
    _assert_disjoint(intervals)
    for task_id, *_ in intervals:  # what the container saw is what the hook recorded
        assert gpu_stack.xcom(dag_id, run_id, task_id)["gpus"] in INVENTORY
    deferred = sorted(task for task, states in seen.items() if "deferred" in states)
    assert len(deferred) >= 1, f"no task was seen deferred: {seen}"
    waited = _waited_deferred(gpu_stack, dag_id)
    assert waited, "no task's log shows a GPU wait spent deferred"
    assert set(waited) <= set(deferred), (waited, seen)


@pytest.mark.timeout(1200)
def test_mixed_sizes_two_one_one_all_one_two(gpu_stack, gpu_engine):
    dag_id = "dood_sched_gpus_mixed"
    _, seen, events = _run(gpu_stack, gpu_engine, dag_id, len(MIXED))
    intervals = _intervals(gpu_engine, events)
    assert len(intervals) == len(MIXED)
    for task, gpus, _, _ in intervals:
        assert len(gpus) == (4 if MIXED[task] == "all" else MIXED[task]), (task, gpus)
    _assert_disjoint(intervals)
    assert any("deferred" in states for states in seen.values()), seen
    assert _waited_deferred(gpu_stack, dag_id), "no task's log shows a GPU wait spent deferred"
