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

from dood.config import parse_config
from dood.gpu_claims import LOCK_NAME, EngineLock, GpuClaims, claims_for
from dood.gpus_cli import main as dood_gpus
from dood.launcher import ContainerLauncher, ContainerSpec
from dood.naming import TaskIdentity
from dood.resources import Resources
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

GPU_POLICY = "  allowed_images: ['dood-test-busybox:*']\n  allow_gpus: true\n"


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
    assert len(engine.api().containers(all=True)) == 2  # nothing refused was created


def test_tasks_through_the_proxy_claim_and_wait_like_direct_ones(engine, gpu_proxy):
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(launch, engine, gpu_proxy.url, f"p{i}", 2, ["sleep", "1"]) for i in range(3)]
        runs = [f.result(timeout=60) for f in futures]
    assert [r.exit_code for r in runs] == [0, 0, 0]
    for a, b in _overlapping(runs):
        assert not set(a.gpus) & set(b.gpus), (a, b)
