"""GPU claims through dood-proxy across stacks, on the GPU engine (the second dockerd with the fake NVIDIA hook).

Two proxies (two stacks) on one engine, each as the compose stack runs it (uid 50001 with the socket's group):
a GPU is the host's, so their creates take turns on the engine's lock and at most one container holds a GPU
at any time, whoever asked. DeviceIDs are the inventory's own ids (aliases are the GPU they name, unknown ids
are refused); `dood.gpu*` labels and `dood-gpu…` names are dood's bookkeeping, never a client's to forge.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import docker
import pytest

from dood.config.model import parse_config
from dood.config.resources import Resources
from dood.gpus.claims import GpuClaims
from dood.gpus.discovery import _FOUND, discover
from dood.gpus.holdings import PROXY_TAKES_LOCK
from dood.gpus.queue import KEY_NOT_CURRENT, ticket_body, ticket_key
from dood.lifecycle.launch import ContainerLauncher, ContainerSpec
from dood.naming import TaskIdentity
from tests.integration.gpu_fixtures import GPU_TEST_IMAGE
from tests.integration.proxy_process import PROXY_UID, running_proxy, traversable
from tests.integration.test_gpu_discovery import PROBE_IMAGE, _context

POLICY = (
    "  allowed_images: ['dood-test-busybox:*', 'dood-test-nvidia-smi:*']\n  allow_gpus: true\n"
    f"  gpu_probe_images: ['{PROBE_IMAGE}']\n  allowed_users: ['1000:1000', '65534:65534']\n"
)


@pytest.fixture(scope="module")
def probe_image(gpu_engine):
    api = gpu_engine.api(timeout=120)
    for line in api.build(fileobj=_context(), custom_context=True, tag=PROBE_IMAGE, rm=True, decode=True):
        assert "error" not in line, line
    return PROBE_IMAGE


@pytest.fixture
def engine(gpu_engine, probe_image):
    def clean():
        _FOUND.clear()
        api = gpu_engine.api()
        for container in api.containers(all=True):
            with contextlib.suppress(docker.errors.NotFound):  # a ticket a waiter removed as expired meanwhile
                api.remove_container(container["Id"], force=True)

    if os.stat(gpu_engine.socket).st_gid != os.stat("/var/run/docker.sock").st_gid:
        pytest.skip("the GPU engine's socket has another group than the main one: the proxy's uid cannot open it")
    traversable(gpu_engine.socket.parent)
    clean()
    yield gpu_engine
    clean()


@pytest.fixture
def proxies(engine, tmp_path):
    """Two proxies on the GPU engine, stacks `a` and `b`, run as uid 50001."""
    traversable(tmp_path)
    with (
        running_proxy(_root(tmp_path / "a"), POLICY, "--upstream", engine.url, "--stack", "a", uid=PROXY_UID) as a,
        running_proxy(_root(tmp_path / "b"), POLICY, "--upstream", engine.url, "--stack", "b", uid=PROXY_UID) as b,
    ):
        yield a, b


def _root(path):
    path.mkdir()
    return path


def _client(proxy) -> docker.APIClient:
    return docker.APIClient(base_url=proxy.url, version="auto", timeout=60)


def _body(ids: list[str] | None, command=("sleep", "30"), labels=None) -> dict:
    body = {"Image": GPU_TEST_IMAGE, "Cmd": list(command), "User": "1000:1000", "Labels": labels or {}}
    if ids is not None:
        body["HostConfig"] = {"DeviceRequests": [{"Driver": "", "Capabilities": [["gpu"]], "DeviceIDs": ids}]}
    return body


def _refused(client, body, name=None) -> str:
    with pytest.raises(docker.errors.APIError) as caught:
        client.create_container_from_config(body, name=name)
    assert caught.value.status_code == 403, caught.value
    return str(caught.value.explanation)


def _epoch(value: str) -> float:
    head, _, fraction = value.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{fraction[:6] or '0'}+00:00").timestamp()


def test_two_stacks_hand_out_gpu_0_to_one_container_at_a_time(engine, proxies):
    """10 parallel clients per proxy, each creating and starting a `DeviceIDs ["0"]` container until one
    passes: from the engine's own record, no two containers' holdings (create -> exit) of GPU 0 overlap."""
    clients = [_client(proxy) for proxy in proxies for _ in range(10)]
    go = threading.Barrier(len(clients))
    refusals = []

    def one(client):
        go.wait()
        deadline = time.monotonic() + 150
        while True:
            try:
                container_id = client.create_container_from_config(_body(["0"], ("sleep", "0.2")))["Id"]
                break
            except docker.errors.APIError as exc:
                assert exc.status_code == 403 and "GPU 0 is held by" in str(exc.explanation), exc
                refusals.append(1)
                assert time.monotonic() < deadline, "waited 150 s for GPU 0 to be free"
                time.sleep(0.05 + 0.1 * (hash(threading.get_ident()) % 7) / 7)
        client.start(container_id)
        client.wait(container_id, timeout=60)
        return container_id

    with ThreadPoolExecutor(len(clients)) as pool:
        ids = [future.result(timeout=200) for future in [pool.submit(one, c) for c in clients]]
    api = engine.api()
    held = []
    for container_id in ids:
        inspected = api.inspect_container(container_id)
        requests = inspected["HostConfig"]["DeviceRequests"]
        assert [r["DeviceIDs"] for r in requests] == [["0"]]
        assert inspected["Config"]["Labels"]["dood.gpus"] == "0"
        assert engine.gpus_given(container_id) == ("0",)
        held.append((_epoch(inspected["Created"]), _epoch(inspected["State"]["FinishedAt"]), container_id[:12]))
    held.sort()
    overlaps = [(a, b) for a, b in itertools.pairwise(held) if b[0] < a[1]]  # sorted by create: neighbours suffice
    assert not overlaps, f"GPU 0 held by two containers at once: {overlaps}"
    stacks = {api.inspect_container(i)["Config"]["Labels"]["dood.stack"] for i in ids}
    assert stacks == {"a", "b"} and len(ids) == 20 and refusals  # both stacks got it; the others were refused
    assert api.containers(all=True, filters={"name": "dood-gpu-lock"}) == []  # every lock released


def test_aliases_and_unknown_gpu_ids_are_refused_or_read_as_the_gpu_they_name(engine, proxies):
    a, b = (_client(proxy) for proxy in proxies)
    message = _refused(a, _body(["00"]))  # no inventory known yet: plain indexes only
    assert "DeviceIDs[0]" in message and "not a plain GPU index" in message
    discover(engine.api(), engine.url, image=PROBE_IMAGE)  # the engine's record: 4 GPUs, index and UUID
    first = a.create_container_from_config(_body(["0"]))["Id"]
    a.start(first)
    refused = {
        "00": "is not a GPU of this Docker host",
        "7": "is not a GPU of this Docker host",
        "all": "is not a GPU of this Docker host",
        "GPU-fake-0000-0000": "GPU 0 is held by",  # GPU 0's UUID: GPU 0
        "1,GPU-fake-0000-0001": "name one GPU twice",
    }
    for alias, reason in refused.items():
        assert reason in _refused(b, _body([alias])), alias
    by_uuid = b.create_container_from_config(_body(["GPU-fake-0000-0002"]))["Id"]
    b.start(by_uuid)
    inspected = engine.api().inspect_container(by_uuid)
    assert inspected["HostConfig"]["DeviceRequests"][0]["DeviceIDs"] == ["2"]  # rewritten to the inventory's id
    assert inspected["Config"]["Labels"]["dood.gpus"] == "2" and engine.gpus_given(by_uuid) == ("2",)


def test_a_forged_gpus_label_holds_nothing(engine, proxies):
    a, b = (_client(proxy) for proxy in proxies)
    forged = a.create_container_from_config(_body(None, labels={"dood.gpus": "1", "dood.gpu_served": "0" * 20}))["Id"]
    a.start(forged)
    labels = engine.api().inspect_container(forged)["Config"]["Labels"]
    assert "dood.gpus" not in labels and "dood.gpu_served" not in labels
    taken = b.create_container_from_config(_body(["1"]))["Id"]  # another stack: GPU 1 is free
    b.start(taken)
    assert engine.gpus_given(taken) == ("1",)


def _now_key(engine) -> str:
    return ticket_key(time.time_ns())  # the GPU engine runs on this machine's clock


def test_forged_tickets_locks_and_names_are_refused(engine, proxies):
    a, _ = (_client(proxy) for proxy in proxies)
    discover(engine.api(), engine.url, image=PROBE_IMAGE)  # the proxy reads the host's 4 GPUs from this record
    lock = {"Image": GPU_TEST_IMAGE, "Cmd": ["true"], "User": "65534:65534", "Labels": {"dood.gpu_lock": "me"}}
    assert PROXY_TAKES_LOCK in _refused(a, lock, name="dood-gpu-lock")
    assert PROXY_TAKES_LOCK in _refused(a, {**lock, "Labels": {}}, name="dood-gpu-lock")
    assert PROXY_TAKES_LOCK in _refused(a, lock)  # the lock's label on any create

    def ticket(key=None, wanted=1, until=None, **extra):
        key = key or _now_key(engine)
        until = time.time() + 60 if until is None else until
        body = ticket_body(
            image=GPU_TEST_IMAGE, user="1000:1000", key=key, wanted=wanted, until=until, waiter="", labels={}
        )
        return {**body, **extra}, f"dood-gpu-ticket-{key}-{uuid.uuid4().hex[:6]}"

    assert "at most 4" in _refused(a, *ticket(wanted=5))  # the host has 4 GPUs (the engine's discovery record)
    assert "more than a lease" in _refused(a, *ticket(until=99999999999))
    assert KEY_NOT_CURRENT in _refused(a, *ticket(key="0" * 20))  # the front of the queue is not for the taking
    assert "a ticket sets only" in _refused(a, *ticket(Env=["A=1"]))
    body, name = ticket()
    assert "HostConfig ['CpuShares']" in _refused(a, {**body, "HostConfig": {"CpuShares": 512}}, name=name)
    assert "a GPU ticket is named" in _refused(a, body, name="dood-gpu-ticket-x")
    assert "a GPU ticket is named" in _refused(a, body)
    assert "must be the name their task labels give" in _refused(a, _body(None), name="dood-gpu-anything")
    assert "GPU discovery's record" in _refused(a, _body(None, ("sh", "-c", "echo 0, GPU-x")), name="dood-gpu-probe")
    assert "dood.gpu* labels" in _refused(a, _body(None, labels={"dood.gpu_whatever": "1"}))
    placed = a.create_container_from_config(body, name=name)["Id"]  # dood's own ticket passes
    labels = engine.api().inspect_container(placed)["Config"]["Labels"]
    assert labels["dood.gpu_ticket"] == body["Labels"]["dood.gpu_ticket"] and labels["dood.stack"] == "a"
    assert engine.api().containers(all=True, filters={"name": "dood-gpu-lock"}) == []


def _claim(url: str, stack: str | None = None, **gpus):
    config = parse_config({"docker": {"url": url}, "gpus": {"devices": ["0", "1", "2", "3"], **gpus}})
    spec = ContainerSpec(
        identity=TaskIdentity(
            dag_id="dood_it_gpu_claims",
            task_id="t",
            run_id=f"run-{uuid.uuid4().hex[:8]}",
            **({"stack": stack} if stack else {}),
        ),
        image=GPU_TEST_IMAGE,
        command=["sleep", "30"],
        user="1000:1000",
        resources=Resources(gpus=1),
    )
    api = docker.APIClient(base_url=url, version="auto", timeout=60)
    launcher = ContainerLauncher(api)
    body = launcher.create_body(spec)
    claims = GpuClaims.of(api, config, image=spec.image, user=spec.user, deadline=time.time() + 60)
    return launcher.create(spec, body, gpus=claims), claims


def test_a_ticket_nobody_claims_with_stops_the_queue_for_one_lease_at_most(engine):
    """On the raw socket anyone may place tickets: one asking for more GPUs than the host has is ignored, one
    renewed but never claimed with is passed over once it has been in turn for a lease."""
    api = engine.api()
    key = ticket_key(time.time_ns())
    never = ticket_body(image=GPU_TEST_IMAGE, user=None, key=key, wanted=5, until=time.time() + 9, waiter="", labels={})
    api.create_container_from_config(never, name=f"dood-gpu-ticket-{key}-000000")
    stop = threading.Event()

    def renew():  # a squatter at the head of the queue, renewing its ticket as a real waiter would
        squat = ticket_key(time.time_ns() - 10**9)
        while not stop.is_set():
            until = time.time() + 3
            body = ticket_body(image=GPU_TEST_IMAGE, user=None, key=squat, wanted=4, until=until, waiter="", labels={})
            api.create_container_from_config(body, name=f"dood-gpu-ticket-{squat}-{uuid.uuid4().hex[:6]}")
            stop.wait(1)

    thread = threading.Thread(target=renew, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        _, claims = _claim(engine.url, ticket_lease_seconds=3, wait_recheck_seconds=1)
        waited = time.monotonic() - started
    finally:
        stop.set()
        thread.join()
    assert claims.claimed == ("0",)
    assert 3 <= waited < 3 + 5 + 10, f"waited {waited:.1f}s behind a ticket nobody claims with (lease 3 s)"


def test_the_launcher_through_the_proxy_leaves_the_lock_to_it(engine, proxies):
    container_id, claims = _claim(proxies[0].url, stack="a")
    assert claims.lock.refereed and claims.claimed == ("0",)
    assert engine.api().inspect_container(container_id)["Config"]["Labels"]["dood.gpus"] == "0"


def _state(engine, container_id: str) -> dict:
    return engine.api().inspect_container(container_id)["State"]


def _running_on_gpu_0(engine) -> list[str]:
    """The engine's running containers that were given GPU 0 (the fake hook's record of their start)."""
    running = engine.api().containers(filters={"status": "running"})
    return [c["Id"] for c in running if "0" in engine.gpus_given(c["Id"], wait_seconds=0)]


def test_an_exited_containers_restart_is_refused_while_another_stack_holds_its_gpu(engine, proxies):
    """F3: A (stack a) ran on GPU 0 and exited; B (stack b) took GPU 0; starting A again is refused, and only
    once B is gone does A's start pass."""
    a, b = (_client(proxy) for proxy in proxies)
    once = ("sh", "-c", "[ -e /tmp/once ] && exec sleep 120; touch /tmp/once")
    first = a.create_container_from_config(_body(["0"], once))["Id"]
    a.start(first)
    assert a.wait(first, timeout=30)["StatusCode"] == 0
    ran = _state(engine, first)
    assert ran["Status"] == "exited" and engine.gpus_given(first) == ("0",)
    second = b.create_container_from_config(_body(["0"], ("sleep", "120")))["Id"]
    b.start(second)

    with pytest.raises(docker.errors.APIError) as caught:
        a.start(first)
    assert caught.value.status_code == 403, caught.value
    message = str(caught.value.explanation)
    assert "refusing to start" in message and "the container's GPUs would collide: GPU 0 is held by" in message
    after = _state(engine, first)
    assert after["Status"] == "exited" and after["StartedAt"] == ran["StartedAt"], "A was started after all"
    assert _running_on_gpu_0(engine) == [second]

    b.kill(second)
    assert b.wait(second, timeout=30)["StatusCode"] != 0
    a.start(first)  # GPU 0 is free again: a plain restart passes
    again = _state(engine, first)
    assert again["Status"] == "running" and again["StartedAt"] != ran["StartedAt"]
    assert _running_on_gpu_0(engine) == [first]
    assert engine.api().containers(all=True, filters={"name": "dood-gpu-lock"}) == []  # every lock released


def test_count_with_device_ids_and_restart_policies_on_gpu_containers_are_refused(engine, proxies):
    a, _ = (_client(proxy) for proxy in proxies)
    both = _body(["2"])
    both["HostConfig"]["DeviceRequests"][0]["Count"] = 1
    message = _refused(a, both)
    assert "HostConfig.DeviceRequests[0].Count" in message and "together with DeviceIDs" in message
    for name in ("always", "unless-stopped", "on-failure"):
        restarting = _body(["2"])
        restarting["HostConfig"]["RestartPolicy"] = {"Name": name, "MaximumRetryCount": 0}
        message = _refused(a, restarting)
        assert "HostConfig.RestartPolicy.Name" in message and "without dood-proxy checking" in message, name
    plain = _body(["2"])
    plain["HostConfig"]["RestartPolicy"] = {"Name": "no"}
    container_id = a.create_container_from_config(plain)["Id"]
    a.start(container_id)
    assert engine.gpus_given(container_id) == ("2",)
