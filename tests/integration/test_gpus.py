"""GPU claims on a real engine (the second dockerd with the fake NVIDIA hook; tests/integration/second_engine.py).

Each "task" here is the launcher's code path as the operator runs it: create_body, claims_for, create
(claim), start, wait, remove; threads stand for the worker processes (every one has its own API client,
and all they share is the engine). Which GPUs a container got comes from the fake hook's record.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

import docker
import pytest

from dood.config.model import parse_config
from dood.config.resources import Resources
from dood.gpus.claims import GpuClaims, claims_for
from dood.gpus.cli import main as dood_gpus
from dood.gpus.lock import LOCK_NAME, EngineLock
from dood.lifecycle.launch import ContainerLauncher, ContainerSpec
from dood.naming import TaskIdentity
from tests.integration.conftest import xcom_value
from tests.integration.gpu_fixtures import GPU_TEST_IMAGE
from tests.integration.proxy_process import running_proxy

DAG = "dood_it_gpus"
INVENTORY = ["0", "1", "2", "3"]


@dataclass
class Ran:
    name: str
    asked: int | str
    gpus: tuple[str, ...]
    started: float
    finished: float
    exit_code: int
    created_at: float  # local clock, when create (the claim) returned


def _config(url: str, **gpus):
    return parse_config({"docker": {"url": url}, "gpus": {"devices": INVENTORY, "wait_recheck_seconds": 5, **gpus}})


def _spec(task: str, asked: int | str, command: list[str], **resources) -> ContainerSpec:
    identity = TaskIdentity(dag_id=DAG, task_id=task, run_id=f"run-{uuid.uuid4().hex[:8]}")
    return ContainerSpec(
        identity=identity,
        image=GPU_TEST_IMAGE,
        command=command,
        user="1000:1000",
        resources=Resources(gpus=asked, **resources),
    )


def _epoch(value: str) -> float:
    head, _, fraction = value.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{fraction[:6] or '0'}+00:00").timestamp()


def launch(engine, url: str, task: str, asked, command, *, emit=None, started: threading.Event | None = None, **res):
    """One task's container life through the launcher; returns what ran."""
    api = docker.APIClient(base_url=url, version="auto", timeout=60)
    launcher = ContainerLauncher(api)
    spec = _spec(task, asked, command, **res)
    body = launcher.create_body(spec)
    claims = claims_for(api, _config(url), body, image=spec.image, user=spec.user, emit=emit, deadline=time.time() + 60)
    container_id = launcher.create(spec, body, gpus=claims)
    created_at = time.time()
    if started is not None:
        started.set()
    try:
        launcher.start(container_id)
        outcome = launcher.wait(container_id)
        state = api.inspect_container(container_id)["State"]
        given = engine.gpus_given(container_id)
    finally:
        launcher.remove(container_id)
    assert claims is not None and given == claims.claimed  # the engine gave exactly what was claimed
    return Ran(
        spec.name, asked, given, _epoch(state["StartedAt"]), _epoch(state["FinishedAt"]), outcome.exit_code, created_at
    )


def _overlapping(runs: list[Ran]):
    return [
        (a, b) for i, a in enumerate(runs) for b in runs[i + 1 :] if a.started < b.finished and b.started < a.finished
    ]


def _most_at_once(runs: list[Ran]) -> int:
    return max(sum(1 for r in runs if r.started <= t < r.finished) for t in (r.started for r in runs))


@pytest.fixture
def engine(gpu_engine):
    """The GPU engine, with no dood container (nor lock) left from an earlier test."""

    def clean():
        api = gpu_engine.api()
        for container in api.containers(all=True):
            api.remove_container(container["Id"], force=True)

    clean()
    yield gpu_engine
    clean()


def test_eight_one_gpu_tasks_on_four_gpus_never_share_one(engine):
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(launch, engine, engine.url, f"t{i}", 1, ["sleep", "1"]) for i in range(8)]
        runs = [f.result(timeout=90) for f in futures]
    assert [r.exit_code for r in runs] == [0] * 8
    assert all(len(r.gpus) == 1 and r.gpus[0] in INVENTORY for r in runs)
    assert _most_at_once(runs) <= 4
    for a, b in _overlapping(runs):
        assert not set(a.gpus) & set(b.gpus), (a, b)
    assert _most_at_once(runs) >= 3  # and they did run side by side, on different GPUs


def test_mixed_sizes_two_one_one_and_all(engine):
    sizes = [2, 1, 1, "all", 1, 2]
    with ThreadPoolExecutor(len(sizes)) as pool:
        futures = [pool.submit(launch, engine, engine.url, f"m{i}", n, ["sleep", "1"]) for i, n in enumerate(sizes)]
        runs = [f.result(timeout=90) for f in futures]
    assert [r.exit_code for r in runs] == [0] * len(sizes)
    for run in runs:
        assert len(run.gpus) == (4 if run.asked == "all" else run.asked)
    for a, b in _overlapping(runs):
        assert not set(a.gpus) & set(b.gpus), (a, b)


def _holder(engine, command, asked="all", **resources):
    """A running container holding GPUs (all four by default), claimed like any task's."""
    api = engine.api()
    launcher = ContainerLauncher(api)
    spec = _spec("holder", asked, command, **resources)
    body = launcher.create_body(spec)
    container_id = launcher.create(spec, body, gpus=claims_for(api, _config(engine.url), body, image=spec.image))
    launcher.start(container_id)
    return container_id


def _waiter(engine, lines: list[str]):
    """A task asking for 4 GPUs, in a thread; returns (future, event set once its container was created)."""
    created = threading.Event()
    pool = ThreadPoolExecutor(1)
    future = pool.submit(launch, engine, engine.url, "waiter", 4, ["true"], emit=lines.append, started=created)
    pool.shutdown(wait=False)
    deadline = time.monotonic() + 10
    while not any(line.startswith("Waiting for 4 GPUs") for line in lines):
        assert time.monotonic() < deadline and not created.is_set(), lines
        time.sleep(0.02)
    return future, created


@pytest.mark.parametrize("end", ["sigkill", "rm -f", "oom"])
def test_a_holder_ended_by_any_path_frees_its_gpus_within_two_seconds(engine, end):
    if end == "oom":  # grows one endless line in memory until the 16m limit kills it
        holder = _holder(engine, ["sh", "-c", "sleep 1; head -c 200000000 /dev/zero | tail"], memory="16m")
    else:
        holder = _holder(engine, ["sleep", "60"])
    lines: list[str] = []
    future, created = _waiter(engine, lines)
    assert "held by: GPU 0: dood_it_gpus/holder/" in lines[0] and "GPU 3: dood_it_gpus/holder/" in lines[0], lines
    api = engine.api()
    if end == "sigkill":
        api.kill(holder, "SIGKILL")
    elif end == "rm -f":
        api.remove_container(holder, force=True)
    ended = time.time()
    run = future.result(timeout=30)
    if end == "oom":
        state = api.inspect_container(holder)["State"]
        assert state["OOMKilled"], state
        ended = _epoch(state["FinishedAt"])
    assert run.exit_code == 0 and run.gpus == tuple(INVENTORY)
    assert run.created_at - ended < 2, f"GPUs freed {run.created_at - ended:.2f} s after the holder ended"


def test_an_engine_restart_frees_every_claim(engine):
    _holder(engine, ["sleep", "60"])
    config = _config(engine.url)
    assert len(GpuClaims.of(engine.api(), config, image=GPU_TEST_IMAGE).holding()) == 1
    engine.restart()
    assert GpuClaims.of(engine.api(), config, image=GPU_TEST_IMAGE).holding() == []
    run = launch(engine, engine.url, "after-restart", "all", ["true"])
    assert run.gpus == tuple(INVENTORY)


def test_a_stale_lock_of_a_dead_holder_is_broken(engine):
    api = engine.api()
    stale = EngineLock(api, image=GPU_TEST_IMAGE, user="1000:1000", stale_seconds=0.3).acquire()  # never released
    lock = EngineLock(api, image=GPU_TEST_IMAGE, user="1000:1000", stale_seconds=0.3)
    started = time.monotonic()
    with lock.held() as fresh:
        assert fresh != stale and lock.holds(fresh)
    assert 0.3 <= time.monotonic() - started < 3
    assert api.containers(all=True, filters={"name": LOCK_NAME}) == []


def test_too_many_gpus_fail_at_once_with_the_inventory(engine):
    from dood.exceptions import DoodConfigError

    with pytest.raises(DoodConfigError, match=r"asks for 5 GPUs; the Docker host has 4"):
        launch(engine, engine.url, "greedy", 5, ["true"])


def test_dood_gpus_shows_who_holds_what(engine, tmp_path, capsys):
    holder = _holder(engine, ["sleep", "60"])
    config = tmp_path / "dood.yaml"
    config.write_text(f"docker:\n  url: {engine.url}\ngpus:\n  devices: {INVENTORY}\n")
    assert dood_gpus(["--config", str(config)]) == 0
    shown = capsys.readouterr().out
    assert "4 in gpus.devices, 0 free, 4 held" in shown
    assert "GPU 2    held by dood_it_gpus/holder/run-" in shown and "try 1" in shown, shown
    engine.api().remove_container(holder, force=True)
    assert dood_gpus(["--config", str(config), "--json"]) == 0
    assert [row["state"] for row in json.loads(capsys.readouterr().out)["gpus"]] == ["free"] * 4


def test_the_operator_through_airflow_claims_a_free_gpu_not_gpu_0(engine, airflow_db, next_date, capfd):
    import dood_it_gpus

    _holder(engine, ["sleep", "60"], asked=1)  # holds GPU 0: the one Docker's Count: 1 would give again
    root = dood_it_gpus.CONFIG.parent
    root.mkdir(parents=True, exist_ok=True)
    dood_it_gpus.CONFIG.write_text(
        f"docker:\n  url: {engine.url}\nruns_root: {root / 'runs'}\nmount_discovery:\n  mode: 'off'\n"
        f"gpus:\n  devices: {INVENTORY}\npolicy:\n  allow_gpus: true\n  allowed_host_roots: ['{root}']\n"
    )
    dagrun = dood_it_gpus.dag.test(logical_date=next_date, run_after=next_date)
    assert xcom_value(dagrun, "train")["return_value"] == {"gpus": "1"}
    assert "Claimed GPU(s) 1 on host" in capfd.readouterr().out


# --- through dood-proxy: the referee ---

GPU_POLICY = (
    "  allowed_images: ['dood-test-busybox:*']\n  allow_gpus: true\n  allowed_users: ['1000:1000', '65534:65534']\n"
)


@pytest.fixture
def gpu_proxy(engine, tmp_path):
    with running_proxy(tmp_path, GPU_POLICY, "--upstream", engine.url) as proxy:
        yield proxy


def _raw_create(proxy_url: str, host_config: dict, env: list[str] | None = None):
    client = docker.APIClient(base_url=proxy_url, version="auto", timeout=30)
    body = {"Image": GPU_TEST_IMAGE, "Cmd": ["sleep", "30"], "User": "1000:1000", "HostConfig": host_config}
    if env:
        body["Env"] = env
    return client, client.create_container_from_config(body)["Id"]


def _gpu_request(**request):
    return {"DeviceRequests": [{"Driver": "", "Capabilities": [["gpu"]], **request}]}


def test_through_the_proxy_colliding_gpu_requests_are_refused(engine, gpu_proxy):
    client, first = _raw_create(gpu_proxy.url, _gpu_request(Count=0, DeviceIDs=["1"]))
    assert engine.api().inspect_container(first)["Config"]["Labels"]["dood.gpus"] == "1"  # forced by the proxy
    client.start(first)
    refused = {
        "count": _gpu_request(Count=1),
        "held": _gpu_request(Count=0, DeviceIDs=["1"]),
        "held_among_others": _gpu_request(Count=0, DeviceIDs=["0", "1"]),
    }
    for name, host_config in refused.items():
        with pytest.raises(docker.errors.APIError) as caught:
            _raw_create(gpu_proxy.url, host_config)
        assert caught.value.status_code == 403, name
        message = str(caught.value.explanation)
        assert ("is held by" in message) if name.startswith("held") else ("Count without DeviceIDs" in message)
    with pytest.raises(docker.errors.APIError) as caught:
        _raw_create(gpu_proxy.url, _gpu_request(Count=0, DeviceIDs=["2"]), env=["NVIDIA_VISIBLE_DEVICES=1"])
    assert caught.value.status_code == 403 and "NVIDIA_VISIBLE_DEVICES" in str(caught.value.explanation)
    _, free = _raw_create(gpu_proxy.url, _gpu_request(Count=0, DeviceIDs=["2"]))  # a free one passes
    client.start(free)
    assert engine.gpus_given(free) == ("2",) and engine.gpus_given(first) == ("1",)
    # The proxy's engine lock around a GPU start goes once the start's answer is relayed: wait for it to go.
    deadline = time.monotonic() + 30
    while any("/dood-gpu-lock" in c["Names"] for c in engine.api().containers(all=True)):
        assert time.monotonic() < deadline, "the proxy's dood-gpu-lock was not removed within 30 s of the start"
        time.sleep(0.1)
    assert len(engine.api().containers(all=True)) == 2  # nothing refused was created


def test_tasks_through_the_proxy_claim_and_wait_like_direct_ones(engine, gpu_proxy):
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(launch, engine, gpu_proxy.url, f"p{i}", 2, ["sleep", "1"]) for i in range(3)]
        runs = [f.result(timeout=60) for f in futures]
    assert [r.exit_code for r in runs] == [0, 0, 0]
    for a, b in _overlapping(runs):
        assert not set(a.gpus) & set(b.gpus), (a, b)


# --- first come, first served ---


def _claimer(engine, task: str, asked, order: list[str], lines: list[str]):
    """A task that claims (waiting its turn), then starts a container that holds its GPUs until removed; in a
    thread. Returns (future, its log lines); `order` gets the task's name when its claim is created."""
    mine: list[str] = []

    def run():
        api = engine.api()
        launcher = ContainerLauncher(api)
        spec = _spec(task, asked, ["sleep", "600"])
        body = launcher.create_body(spec)
        claims = claims_for(api, _config(engine.url), body, image=spec.image, user=spec.user, emit=mine.append)
        container_id = launcher.create(spec, body, gpus=claims)
        order.append(task)
        launcher.start(container_id)
        return container_id, claims.claimed

    pool = ThreadPoolExecutor(1)
    future = pool.submit(run)
    pool.shutdown(wait=False)
    return future, mine


def _wait_until(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_later_waiter_never_overtakes_an_earlier_one(engine):
    """Four holders (one GPU each), then six waiters queued one after the other (each once the previous one
    says it waits): as GPUs free one at a time, the waiters get them in the order they came, although
    every waiter behind the head could take a freed GPU (all ask for one)."""
    holders_ = [_holder(engine, ["sleep", "600"], asked=1) for _ in range(4)]
    order: list[str] = []
    waiters = []
    for i in range(6):
        future, lines = _claimer(engine, f"w{i}", 1, order, [])
        _wait_until(lambda lines=lines: any(line.startswith("Waiting for 1 GPU") for line in lines), f"w{i} to queue")
        assert f"{i} waiter" in lines[0] if i else "before it" not in lines[0], lines
        waiters.append(future)
    api = engine.api()
    released = [*holders_]
    for step in range(6):
        api.remove_container(released[step], force=True)  # one GPU frees...
        _wait_until(lambda step=step: len(order) == step + 1, f"a waiter to be served after release {step}")
        time.sleep(0.3)  # ...and nobody else takes another
        assert order == [f"w{i}" for i in range(step + 1)], order
        if step < 2:
            released.append(waiters[step].result(timeout=30)[0])  # w0, w1 hold theirs until released in turn
    given = [future.result(timeout=30)[1] for future in waiters]
    assert all(len(gpus) == 1 for gpus in given)


def test_a_big_request_is_not_starved_by_small_ones_behind_it(engine):
    """Strictly first come, first served: a waiter for all GPUs at the head of the queue gets them before
    a later one-GPU waiter, even though a single GPU was free long before (no overtaking)."""
    held = [_holder(engine, ["sleep", "600"], asked=1) for _ in range(2)]  # GPUs 0, 1; 2 and 3 free
    order: list[str] = []
    big, big_lines = _claimer(engine, "big", "all", order, [])
    _wait_until(lambda: any(line.startswith("Waiting for all GPUs") for line in big_lines), "the big one to queue")
    small, small_lines = _claimer(engine, "small", 1, order, [])
    _wait_until(lambda: any(line.startswith("Waiting for 1 GPU") for line in small_lines), "the small one to queue")
    api = engine.api()
    api.remove_container(held[0], force=True)
    time.sleep(1)
    assert order == []  # three free GPUs, and still the head's turn
    api.remove_container(held[1], force=True)
    big_id, big_gpus = big.result(timeout=30)
    assert big_gpus == tuple(INVENTORY) and order == ["big"]
    api.remove_container(big_id, force=True)
    assert small.result(timeout=30)[1] == ("0",) and order == ["big", "small"]


def test_a_waiter_across_an_engine_restart_gets_the_gpus_within_two_seconds(engine):
    _holder(engine, ["sleep", "600"])
    lines: list[str] = []
    future, _ = _waiter(engine, lines)
    engine.restart()  # the holder dies with the engine; the waiter's ticket (a created container) survives
    answered = time.time()
    run = future.result(timeout=60)
    assert run.exit_code == 0 and run.gpus == tuple(INVENTORY)
    assert run.created_at - answered < 2, f"claimed {run.created_at - answered:.2f} s after the engine answered"


# --- reattach: a worker dies mid-training, the retry adopts the container and its GPUs ---

REATTACH_DAG = "dood_it_gpu_reattach"
WORKER = (
    "import sys; from datetime import datetime; sys.path.insert(0, sys.argv[1]); import dood_it_gpus; "
    "when = datetime.fromisoformat(sys.argv[2]); dood_it_gpus.reattach_dag.test(logical_date=when, run_after=when)"
)


def _write_operator_config(engine) -> None:
    import dood_it_gpus

    root = dood_it_gpus.CONFIG.parent
    root.mkdir(parents=True, exist_ok=True)
    dood_it_gpus.CONFIG.write_text(
        f"docker:\n  url: {engine.url}\nruns_root: {root / 'runs'}\nmount_discovery:\n  mode: 'off'\n"
        f"gpus:\n  devices: {INVENTORY}\npolicy:\n  allow_gpus: true\n  allowed_host_roots: ['{root}']\n"
    )


def test_a_worker_sigkilled_mid_training_and_the_retry_keep_the_same_gpus(engine, airflow_db, next_date, tmp_path):
    """The worker (a `dag.test()` subprocess, as in test_reattach.py) is SIGKILLed while its training runs
    on GPU 1; the retry adopts the running container: one claim in all (the engine's create events), the
    result written by try 1's container on GPU 1. (`dag.test()` recreates the run: its try 1 finds the name
    taken by the running container and fails; its try 2 reattaches.)"""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    from tests.integration.conftest import run_id_for

    _write_operator_config(engine)
    _holder(engine, ["sleep", "600"], asked=1)  # GPU 0 is taken: the training gets GPU 1
    api = engine.api()
    since = time.time() - 1
    log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(Path(__file__).parent / "dags"), next_date.isoformat()],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    label = f"dood.dag_id={REATTACH_DAG}"
    _wait_until(
        lambda: api.containers(filters={"label": label, "status": "running"}) or worker.poll() is not None,
        "the training to start",
        timeout=120,
    )
    (training,) = api.containers(filters={"label": label, "status": "running"})
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)
    assert api.inspect_container(training["Id"])["State"]["Running"], "the training died with its worker"
    assert training["Labels"]["dood.gpus"] == "1" and engine.gpus_given(training["Id"]) == ("1",)

    with create_session() as session:  # what the scheduler does for a dead worker
        ti = session.query(TaskInstance).filter_by(dag_id=REATTACH_DAG, run_id=run_id_for(next_date)).one()
        ti.state = "up_for_retry"
    import dood_it_gpus

    dagrun = dood_it_gpus.reattach_dag.test(logical_date=next_date, run_after=next_date)

    assert dagrun.state == "success"
    assert xcom_value(dagrun, "train")["return_value"] == {"gpus": "1", "try": 1}  # try 1's container, GPU 1
    claims = list(
        api.events(
            since=int(since),
            until=int(time.time()) + 1,
            filters={"type": "container", "event": "create", "label": [label]},
            decode=True,
        )
    )
    assert [e["Actor"]["Attributes"]["dood.gpus"] for e in claims] == ["1"]  # one claim, never a second


def test_a_deferred_wait_for_gpus_ends_at_the_execution_timeout(engine, airflow_db, next_date, capfd):
    """All GPUs held for good: the deferrable task queues, defers (dag.test runs its trigger inline), and its
    execution_timeout, carried into the trigger as an absolute deadline, fails it; its ticket is gone."""
    import dood_it_gpus

    from tests.integration.conftest import task_state

    _write_operator_config(engine)
    _holder(engine, ["sleep", "600"])
    dagrun = dood_it_gpus.timeout_dag.test(logical_date=next_date, run_after=next_date)
    out = capfd.readouterr().out
    assert task_state(dagrun, "train") == "failed"
    assert "Waiting for 1 GPU on host" in out and "No GPUs freed before the task's deadline" in out, out[-3000:]
    assert engine.api().containers(all=True, filters={"label": "dood.gpu_ticket"}) == []
    assert engine.api().containers(all=True, filters={"label": f"dood.dag_id={dood_it_gpus.timeout_dag.dag_id}"}) == []
