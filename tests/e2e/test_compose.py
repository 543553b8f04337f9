"""The docker-compose stack really does DooD: Airflow 3.3 in containers, the host's daemon behind dood-proxy,
host ≠ container paths.

In order (one stack for the whole module): the stack's shape (the raw socket only in the proxy), task code
refused by the proxy (a privileged create, stopping or removing a container of the stack), the socket
permission error, a REST-triggered retraining run whose artifacts land at the HOST path, the launched steps'
bind sources (host paths), a 3-date backfill run from inside the stack -- all through the proxy, the only
route to Docker the Airflow containers have -- and a teardown that leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import date, datetime, timedelta, timezone
from datetime import time as dtime

import docker
import pytest

from dood.operators.partition import partition_key
from tests.e2e.conftest import (
    EXECUTOR,
    ML_IMAGE,
    PROJECT,
    REST_CEILING_SECONDS,
    TASK_RUNNER,
    USERNAME,
    log,
    wait_for,
)

DAG_ID = "dood_breast_cancer"
PIPELINE = "breast_cancer"
STEPS = ("prepare", "train", "evaluate", "promote")
SOCKET = "/var/run/docker.sock"
CONTAINER_ROOT = "/opt/dood"  # where docker-compose.yml mounts $DOOD_HOST_ROOT inside the Airflow containers
PROXY = "dood-proxy"
PROXY_URL = "tcp://dood-proxy:2375"  # DOCKER_HOST of the Airflow containers
PROXY_NETWORK = f"{PROJECT}_docker-api"  # internal: only the proxy and the Docker clients join it
READ_ONLY_PROXY = "dood-proxy-ro"  # the api-server's only way to Docker: dood.proxy.readonly
READ_ONLY_URL = "tcp://dood-proxy-ro:2376"
READ_ONLY_NETWORK = f"{PROJECT}_docker-api-ro"


def mounts_of(container) -> dict[str, dict]:
    return {m["Destination"]: m for m in container.attrs["Mounts"]}


def wait_for_runs(stack, run_ids: list[str], timeout: float) -> dict[str, dict]:
    """Poll the REST API until every run ended; fails on a failed run with its task states."""

    def ended():
        runs = {r: stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{r}") for r in run_ids}
        failed = [r for r, run in runs.items() if run["state"] == "failed"]
        if failed:
            tis = stack.api("GET", f"/dags/{DAG_ID}/dagRuns/~/taskInstances")["task_instances"]
            states = {(ti["dag_run_id"], ti["task_id"]): ti["state"] for ti in tis if ti["dag_run_id"] in failed}
            raise AssertionError(f"runs failed: {failed}; task states: {states}")
        return runs if all(run["state"] == "success" for run in runs.values()) else None

    def task_states():
        tis = stack.api("GET", f"/dags/{DAG_ID}/dagRuns/~/taskInstances")["task_instances"]
        return sorted(
            (ti["dag_run_id"], ti["task_id"], ti["state"], ti["try_number"])
            for ti in tis
            if ti["dag_run_id"] in run_ids
        )

    # `timeout`: how long the runs may go without a task changing state (a loaded machine is slow, not stuck).
    return wait_for(f"runs {run_ids} to succeed", ended, timeout=timeout, interval=3, progress=task_states)


def holds_socket(container) -> bool:
    return any(
        m.get("Source") == SOCKET or m["Destination"] == SOCKET or m["Destination"].endswith("docker.sock")
        for m in container.attrs["Mounts"]
    )


def test_stack_shape_raw_socket_only_in_the_proxy(stack):
    proxy = stack.service_container(PROXY)
    scheduler, triggerer = stack.service_container("airflow-scheduler"), stack.service_container("airflow-triggerer")
    apiserver, processor = (
        stack.service_container("airflow-apiserver"),
        stack.service_container("airflow-dag-processor"),
    )
    launchers = [scheduler, triggerer] + ([stack.service_container("airflow-worker")] if EXECUTOR == "celery" else [])
    docker_gid = stack.settings["DOCKER_GID"]

    # The raw socket: in the proxy, and in no other container of the project (airflow-init and postgres included).
    holders = sorted(c.labels["com.docker.compose.service"] for c in stack.containers() if holds_socket(c))
    assert holders == [PROXY, READ_ONLY_PROXY], f"the host's Docker socket must be in the proxies only, not {holders}"
    read_only_proxy = stack.service_container(READ_ONLY_PROXY)
    assert "--read-only" in read_only_proxy.attrs["Args"], read_only_proxy.attrs["Args"]
    assert not read_only_proxy.attrs["HostConfig"]["PortBindings"]
    assert read_only_proxy.attrs["HostConfig"]["ReadonlyRootfs"] and read_only_proxy.attrs["HostConfig"]["CapDrop"] == [
        "ALL"
    ]
    assert set(read_only_proxy.attrs["NetworkSettings"]["Networks"]) == {READ_ONLY_NETWORK}
    assert stack.client.networks.get(READ_ONLY_NETWORK).attrs["Internal"] is True
    on_read_only = {
        c.labels["com.docker.compose.service"]
        for c in stack.containers()
        if READ_ONLY_NETWORK in c.attrs["NetworkSettings"]["Networks"]
    }
    assert on_read_only == {READ_ONLY_PROXY, "airflow-apiserver"}, on_read_only
    assert f"DOCKER_HOST={READ_ONLY_URL}" in apiserver.attrs["Config"]["Env"]
    assert mounts_of(proxy)[SOCKET]["Source"] == SOCKET
    assert docker_gid in proxy.attrs["HostConfig"]["GroupAdd"], "the proxy needs the socket's group"
    assert not proxy.attrs["HostConfig"]["PortBindings"], "the proxy must never be published on the host"
    assert proxy.attrs["HostConfig"]["ReadonlyRootfs"] and proxy.attrs["HostConfig"]["CapDrop"] == ["ALL"]
    assert set(proxy.attrs["NetworkSettings"]["Networks"]) == {PROXY_NETWORK}

    # Its network: internal (no route out), joined only by the proxy and the services that launch or wait.
    network = stack.client.networks.get(PROXY_NETWORK)
    assert network.attrs["Internal"] is True
    attached = {
        c.labels["com.docker.compose.service"]
        for c in stack.containers()
        if PROXY_NETWORK in c.attrs["NetworkSettings"]["Networks"]
    }
    assert attached == {PROXY, *(c.labels["com.docker.compose.service"] for c in launchers)}, attached

    for container in launchers:  # no socket, no docker group: Docker is the proxy, and only that
        assert not holds_socket(container), f"{container.name} must reach Docker through {PROXY} only"
        assert not container.attrs["HostConfig"]["GroupAdd"], f"{container.name} needs no docker group"
        assert f"DOCKER_HOST={PROXY_URL}" in container.attrs["Config"]["Env"]
        assert container.labels.get("dood.role") == "airflow", "the label --inspectable-label lets discovery work"
        data_root = mounts_of(container)[CONTAINER_ROOT]
        assert data_root["Source"] == str(stack.host_root) != CONTAINER_ROOT  # host path ≠ container path
    for container in (apiserver, processor):  # no route to the proxy that creates (the api-server: read-only)
        assert not holds_socket(container), f"{container.name} must not hold the Docker socket"
        assert PROXY_NETWORK not in container.attrs["NetworkSettings"]["Networks"]
        assert CONTAINER_ROOT not in mounts_of(container)
    for container in (proxy, read_only_proxy, *launchers, apiserver, processor):
        user = container.attrs["Config"]["User"].split(":")[0]
        assert user not in ("", "0", "root"), f"{container.name} must not run as root"
    bindings = apiserver.attrs["HostConfig"]["PortBindings"]["8080/tcp"]
    assert {b["HostIp"] for b in bindings} == {"127.0.0.1"}, "the API must be published on loopback only"


# Run inside the task runner's container with its own Python: what any task code (a DAG's Python, a
# dependency) could do with the raw docker SDK. It finds Docker only through $DOCKER_HOST, i.e. the proxy.
ESCAPE_ATTEMPTS = r"""
import json, os, sys
import docker
from docker.errors import APIError

image, name, target_id, target_name = sys.argv[1:5]
client = docker.from_env(timeout=30)
out = {"socket": os.path.exists("/var/run/docker.sock"), "docker_host": os.environ.get("DOCKER_HOST"),
       "ping": client.ping()}

def attempt(what, call):
    try:
        call()
        out[what] = {"status": "allowed"}
    except APIError as exc:
        out[what] = {"status": exc.status_code, "message": str(exc.explanation)}

host_config = client.api.create_host_config(privileged=True, binds=["/:/host"])
attempt("privileged create", lambda: client.api.create_container(image, "true", name=name, host_config=host_config))
attempt("stop by name", lambda: client.api.stop(target_name, timeout=1))
attempt("kill by id", lambda: client.api.kill(target_id))
attempt("remove by id", lambda: client.api.remove_container(target_id, force=True))
attempt("exec", lambda: client.api.exec_create(target_id, "true"))
out["listed"] = [c["Id"] for c in client.api.containers(all=True)]

# The symlink escape (issue 9): plant a link in the data root, or in a directory of one's own, then bind it.
try:
    os.symlink("/", "/opt/dood/rootlink")
    out["plant in the data root"] = "planted"
except OSError as exc:
    out["plant in the data root"] = exc.strerror
host_root = os.environ["DOOD_HOST_ROOT"]
leaf = f"{host_root}/runs/{name}-leaf"
made = client.api.post(f"{client.api.base_url}/dood/v1/directories", json={"path": leaf, "user": "50000:0"})
out["leaf"] = made.status_code
user = f"{os.getuid()}:{os.getgid()}"
planter = client.api.create_container(
    image, ["sh", "-c", "ln -s / /w/rootlink"], user=user, name=f"{name}-plant",
    host_config=client.api.create_host_config(binds=[f"{leaf}:/w"]),
)
client.api.start(planter)
out["planted in its own directory"] = client.api.wait(planter, timeout=60)["StatusCode"] == 0
client.api.remove_container(planter, force=True)
host_config = client.api.create_host_config(binds=[f"{leaf}/rootlink:/host"])
attempt("bind the planted link", lambda: client.api.create_container(image, "true", user=user, name=name,
                                                                       host_config=host_config))
print("RESULT " + json.dumps(out))
"""


def test_task_code_through_the_proxy_cannot_create_privileged_or_touch_the_stack(stack):
    """From inside the container where tasks run: the raw docker SDK, through the proxy, is refused (403)."""
    postgres = stack.service_container("postgres")
    postgres_started_at = postgres.attrs["State"]["StartedAt"]
    name = f"escape-{PROJECT}-{os.getpid()}"  # not dood-…: those names are the task containers' (dood-proxy)
    started = time.monotonic()
    args = [ML_IMAGE, name, postgres.id, postgres.name]
    result = stack.compose("exec", "-T", TASK_RUNNER, "python", "-c", ESCAPE_ATTEMPTS, *args, timeout=120)
    [line] = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    out = json.loads(line.removeprefix("RESULT "))
    log(
        f"escape attempts from {TASK_RUNNER} through the proxy ({time.monotonic() - started:.1f}s): "
        + ", ".join(f"{k}: {v['status']}" for k, v in out.items() if isinstance(v, dict))
    )

    assert out["socket"] is False and out["docker_host"] == PROXY_URL and out["ping"] is True
    create = out["privileged create"]
    assert create["status"] == 403, create
    assert "dood-proxy" in create["message"] and "[privileged]" in create["message"], create
    assert "[system-path]" in create["message"], "every violation is listed, the / bind too"
    for what in ("stop by name", "kill by id", "remove by id", "exec"):
        assert out[what]["status"] == 403, (what, out[what])
        assert "dood-proxy" in out[what]["message"], (what, out[what])
    for what in ("stop by name", "kill by id", "remove by id"):
        assert "not managed by dood" in out[what]["message"], (what, out[what])
    assert postgres.id not in out["listed"], "the proxy lists only dood's containers"
    # The symlink escape: task code cannot write the data root at all, and a link it plants (through a
    # container) in a directory of its own cannot be bound: the proxy refuses it before anything exists.
    assert out["plant in the data root"] == "Read-only file system", out
    assert out["leaf"] == 200 and out["planted in its own directory"] is True, out
    bind = out["bind the planted link"]
    assert bind["status"] == 403 and "could be re-pointed" in bind["message"], bind
    assert not (stack.host_root / "rootlink").exists()

    # On the host, through the raw socket: nothing was created, and the database never stopped.
    assert stack.client.containers.list(all=True, filters={"name": name}) == []
    postgres.reload()
    assert postgres.status == "running" and postgres.attrs["State"]["StartedAt"] == postgres_started_at
    refusals = stack.compose("logs", "--no-color", PROXY, check=False).stdout
    assert "privileged" in refusals and "not managed by dood" in refusals, "every refusal is logged by the proxy"


# Run inside the api-server with its own Python: what code there (the UI plugin, any other plugin) can do
# with the raw docker SDK. It reaches Docker only through $DOCKER_HOST, the read-only proxy.
API_SERVER_ATTEMPTS = r"""
import json, os, sys
import docker
from docker.errors import APIError

image, target_id, name = sys.argv[1:4]
client = docker.from_env(timeout=30)
out = {"socket": os.path.exists("/var/run/docker.sock"), "docker_host": os.environ.get("DOCKER_HOST"),
       "ping": client.ping(), "listed": [c["Id"] for c in client.api.containers(all=True)]}

def attempt(what, call):
    try:
        call()
        out[what] = {"status": "allowed"}
    except APIError as exc:
        out[what] = {"status": exc.status_code, "message": str(exc.explanation)}

attempt("inspect", lambda: client.api.inspect_container(target_id))
attempt("log tail", lambda: client.api.logs(target_id, tail=5))
attempt("create", lambda: client.api.create_container(image, "true", name=name, user="50000:0"))
attempt("start", lambda: client.api.start(target_id))
attempt("stop", lambda: client.api.stop(target_id, timeout=1))
attempt("kill", lambda: client.api.kill(target_id))
attempt("remove", lambda: client.api.remove_container(target_id, force=True))
attempt("exec", lambda: client.api.exec_create(target_id, "true"))
made = client.api.post(f"{client.api.base_url}/dood/v1/directories", json={"path": "/tmp/x", "user": "50000:0"})
out["directories"] = made.status_code
try:  # the proxy that creates is on a network the api-server has not joined
    docker.DockerClient(base_url="tcp://dood-proxy:2375", timeout=5).ping()
    out["creating proxy"] = "reachable"
except Exception as exc:
    out["creating proxy"] = type(exc).__name__
print("RESULT " + json.dumps(out))
"""


def test_api_server_reaches_docker_read_only_and_cannot_create_or_stop_anything(stack):
    """The UI's way to Docker (issue 15): from inside the api-server, the raw SDK lists and inspects this
    stack's dood containers and is refused everything else; the DooD page, through it, lists the container."""
    name = f"{PROJECT}-ro-{os.getpid()}"
    labels = {"dood.managed": "true", "dood.stack": PROJECT, "dood.dag_id": DAG_ID, "dood.task_id": "train"}
    target = stack.client.containers.run(  # a dood container of this stack, made on the host's raw socket
        ML_IMAGE, ["sleep", "300"], name=f"{name}-target", labels=labels, user="50000:0", detach=True
    )
    try:
        result = stack.compose(
            "exec",
            "-T",
            "airflow-apiserver",
            "python",
            "-c",
            API_SERVER_ATTEMPTS,
            ML_IMAGE,
            target.id,
            name,
            timeout=120,
        )
        [line] = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
        out = json.loads(line.removeprefix("RESULT "))
        log("api-server through the read-only proxy: " + json.dumps(out)[:600])
        assert out["socket"] is False and out["docker_host"] == READ_ONLY_URL and out["ping"] is True
        assert target.id in out["listed"] and stack.service_container("postgres").id not in out["listed"]
        assert out["inspect"]["status"] == "allowed" and out["log tail"]["status"] == "allowed", out
        for what in ("create", "start", "stop", "kill", "remove", "exec"):
            assert out[what]["status"] == 403, (what, out[what])
            assert "read-only" in out[what]["message"], (what, out[what])
        assert out["directories"] == 403, out
        assert out["creating proxy"] != "reachable", out

        # The DooD page's data, asked as a signed-in user through the api-server: the container, from Docker.
        listed = stack.api_raw("GET", "/dood/api/containers")
        assert target.id[:12] in json.dumps(listed), listed

        target.reload()
        assert target.status == "running", "nothing the api-server asked stopped it"
        created = stack.client.containers.list(all=True, filters={"name": f"^/?{name}$"})  # not the -target
        assert created == [], "nothing was created"
    finally:
        target.remove(force=True)


def test_socket_without_the_docker_group_fails_with_a_clear_error(stack):
    """The image and user of the proxy and Airflow, the raw socket mounted but no group_add (the mistake to
    avoid on dood-proxy): dood's hook, talking to the socket, says why and how to fix it."""
    image = stack.service_container("airflow-scheduler").image.tags[0]
    probe = (
        "from dood.config.model import DoodConfig\nfrom dood.hooks.dood import DoodHook\nDoodHook(DoodConfig()).api\n"
    )
    result = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--user",
            "50000:0",
            "-v",
            f"{SOCKET}:{SOCKET}",
            "-e",
            "DOOD_CONFIG=/nonexistent",
            "--entrypoint",
            "python",
            image,
            "-c",
            probe,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "permission denied" in output.lower() and SOCKET in output, output[-2000:]
    if "DockerUnreachable" in output:  # dood's own explanation: it must name the group and the fix
        assert "group_add" in output and f"group {stack.settings['DOCKER_GID']}" in output, output[-2000:]


def test_retraining_triggered_through_the_rest_api_writes_model_and_metrics_on_the_host(stack):
    wait_for(f"{DAG_ID} to be parsed", lambda: _dag_visible(stack), timeout=180, interval=3)
    assert stack.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})["is_paused"] is False
    run = stack.api("POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {"n_estimators": 50}})
    run_id = stack.state["manual_run_id"] = run["dag_run_id"]
    log(f"triggered {run_id} through the REST API")
    started = time.monotonic()
    [done] = wait_for_runs(stack, [run_id], timeout=420).values()
    log(f"{run_id} succeeded in {time.monotonic() - started:.0f}s")

    instances = stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
    runner = stack.service_container(TASK_RUNNER).attrs["Config"]["Hostname"]
    assert {ti["hostname"] for ti in instances if ti["state"] == "success"} == {runner}, (
        f"tasks must run in {TASK_RUNNER}"
    )
    tis = {ti["task_id"]: ti["state"] for ti in instances}
    promote = tis.pop("promote", None)  # skipped when the scheduled run's model is as good: both are fine
    assert tis == dict.fromkeys(STEPS[:-1], "success") and promote in ("success", "skipped"), tis

    # Artifacts at the HOST path ($DOOD_HOST_ROOT), written by containers that saw them at /dood/work.
    interval = [
        datetime.fromisoformat(done[k]) if done[k] else None for k in ("data_interval_start", "data_interval_end")
    ]
    work = stack.host_root / "artifacts" / PIPELINE / partition_key(run_id, *interval)
    assert (work / "model" / "model.joblib").stat().st_size > 0
    train = json.loads((work / "metrics" / "train.json").read_text())
    assert train["n_estimators"] == 50, "the run's conf must reach the training container"
    evaluation = json.loads((work / "metrics" / "eval.json").read_text())
    assert evaluation["accuracy"] >= 0.85 and evaluation["passed"] is True
    assert (stack.host_root / "models" / PIPELINE / "champion" / "metrics.json").exists()

    # The result-file contract through the mapped runs_root: train's JSON became its XCom.
    xcom = stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/train/xcomEntries/return_value")
    value = xcom["value"] if isinstance(xcom["value"], dict) else json.loads(xcom["value"])
    assert value["n_estimators"] == 50 and value["model_path_in_container"] == "/dood/work/model/model.joblib"
    assert value["model_path"] == str(work / "model" / "model.joblib")  # the HOST path: where a person finds it


def test_launched_steps_got_host_paths_as_bind_sources_and_were_removed(stack):
    run_id = stack.state.get("manual_run_id")
    if not run_id:
        pytest.skip("the REST-triggered run did not happen")
    launched = [c for c in stack.recorder.launched if c["labels"].get("dood.run_id") == run_id]
    assert sorted(c["labels"]["dood.task_id"] for c in launched) == sorted(STEPS), launched
    host_root = str(stack.host_root)
    for container in launched:
        assert container["mounts"] is not None, f"{container['id'][:12]} was gone before it could be inspected"
        assert container["labels"].get("dood.managed") == "true", "created through dood-proxy, which forces it"
        binds = {m["Destination"]: m["Source"] for m in container["mounts"] if m["Type"] == "bind"}
        assert {"/dood/run", "/dood/work", "/dood/input", "/dood/models"} <= set(binds), binds
        for target, source in binds.items():
            assert source.startswith(host_root + "/"), f"{container['name']}: {target} <- {source} is not a host path"
            assert not source.startswith(CONTAINER_ROOT), f"{container['name']}: {source} is an Airflow-side path"
        assert binds["/dood/work"].startswith(f"{host_root}/artifacts/{PIPELINE}/")
        assert binds["/dood/run"] == f"{host_root}/runs/{container['name']}"
    left = stack.client.containers.list(all=True, filters={"label": [f"dood.stack={PROJECT}", f"dood.run_id={run_id}"]})
    assert left == [], "auto_remove: always must remove every step container"


def test_backfill_of_three_dates_from_inside_the_stack_writes_three_partitions(stack):
    if not stack.state.get("manual_run_id"):
        wait_for(f"{DAG_ID} to be parsed", lambda: _dag_visible(stack), timeout=180, interval=3)
        stack.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
    # @weekly = Sundays 00:00 UTC; three of them, well in the past and after the pipeline's start_date.
    today = datetime.now(timezone.utc).date()
    first = today - timedelta(days=28) - timedelta(days=(today.weekday() + 1) % 7)
    dates = [first + timedelta(weeks=i) for i in range(3)]
    started = time.monotonic()
    result = stack.compose(
        "exec",
        "-T",
        "airflow-scheduler",
        "airflow",
        "backfill",
        "create",
        "--dag-id",
        DAG_ID,
        "--from-date",
        dates[0].isoformat(),
        "--to-date",
        dates[-1].isoformat(),
        timeout=180,
    )
    log(f"backfill created from inside the stack ({dates[0]} .. {dates[-1]}) in {time.monotonic() - started:.0f}s")
    run_ids = [f"backfill__{_midnight(d).isoformat()}" for d in dates]
    assert all(r in result.stdout + result.stderr for r in run_ids), result.stdout[-2000:] + result.stderr[-2000:]
    runs = wait_for_runs(stack, run_ids, timeout=600)
    log(f"3 backfill runs succeeded in {time.monotonic() - started:.0f}s")

    partitions = set()
    for run_id, run in runs.items():
        assert run["run_type"] == "backfill"
        interval = [datetime.fromisoformat(run[k]) for k in ("data_interval_start", "data_interval_end")]
        work = stack.host_root / "artifacts" / PIPELINE / partition_key(run_id, *interval)
        assert (work / "model" / "model.joblib").exists() and (work / "metrics" / "eval.json").exists(), work
        partitions.add(work)
    assert len(partitions) == 3
    on_host = {p.name for p in (stack.host_root / "artifacts" / PIPELINE).iterdir() if "backfill__" in p.name}
    assert on_host == {p.name for p in partitions}
    for d in dates:
        assert any(name.startswith(f"{d:%Y%m%d}T000000Z") for name in on_host), (d, on_host)


JANITOR_SCOPE = "dood-test=janitor"


def test_janitor_cli_asks_the_rest_api_and_removes_only_orphans(stack):
    """`dood-janitor` inside the stack, asking Airflow's public REST API about each container's task instance."""
    base = {  # labelled as this stack's own (the janitor sees no other stack's containers)
        "dood.managed": "true",
        "dood.stack": PROJECT,
        "dood.dag_id": DAG_ID,
        "dood.map_index": "-1",
        "dood.try_number": "1",
    }
    scope = dict([JANITOR_SCOPE.split("=")])
    stoppable = ["sh", "-c", "trap 'exit 0' TERM; sleep 300 & wait"]

    def start(name, labels):
        return stack.client.containers.run(
            ML_IMAGE, stoppable, name=f"{PROJECT}-{name}-{os.getpid()}", labels={**labels, **scope}, detach=True
        )

    if not stack.state.get("manual_run_id"):
        pytest.skip("the REST-triggered run did not happen (its test failed): no ended task to judge")
    orphan = start("janitor-orphan", {**base, "dood.run_id": "manual__no-such-run", "dood.task_id": "train"})
    ended = start("janitor-ended", {**base, "dood.run_id": stack.state["manual_run_id"], "dood.task_id": "train"})
    stranger = start("janitor-stranger", {"owner": "someone-else"})
    command = [
        "exec", "-T", TASK_RUNNER, "dood-janitor", "--api-url", "http://airflow-apiserver:8080",
        "--username", USERNAME, "--password", stack.password, "--label", JANITOR_SCOPE,
    ]  # fmt: skip
    try:
        # The janitor asks the REST API about each container: as long as that takes on a loaded machine.
        dry_run = stack.compose(*command, "--dry-run", timeout=REST_CEILING_SECONDS)
        dry = dry_run.stdout
        log(f"janitor dry run: {dry.strip()}")
        said = f"the janitor's dry run said:\n{dry}\n{dry_run.stderr[-2000:]}"
        assert f"would remove {orphan.name}: its task instance no longer exists" in dry, said
        assert f"would remove {ended.name}: its task instance has ended (success)" in dry, said
        assert stranger.name not in dry
        for container in (orphan, ended):
            container.reload()
            assert container.status == "running", "a dry run removes nothing"

        sweep = stack.compose(*command, timeout=REST_CEILING_SECONDS)  # its REST calls, then the orphans' stops
        swept = sweep.stdout
        log(f"janitor: {swept.strip()}")
        names = {c.name for c in stack.client.containers.list(all=True, filters={"label": JANITOR_SCOPE})}
        assert names == {stranger.name}, (
            f"only the orphans go; the container without our label stays. The janitor said:\n{swept}\n"
            f"{sweep.stderr[-2000:]}"
        )
    finally:
        for container in (orphan, ended, stranger):
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass


def test_down_leaves_no_container_network_volume_or_launched_step(stack, request):
    stack.down(failed=request.session.testsfailed > 0)
    label = f"com.docker.compose.project={PROJECT}"
    assert stack.client.containers.list(all=True, filters={"label": label}) == []
    assert stack.client.networks.list(filters={"label": label}) == []
    assert stack.client.volumes.list(filters={"label": label}) == []
    assert [v.name for v in stack.client.volumes.list() if v.name.startswith(f"{PROJECT}_")] == []
    assert stack.client.containers.list(all=True, filters={"label": f"dood.stack={PROJECT}"}) == []
    assert os.path.isdir(stack.host_root), "the data root belongs to the host: `down -v` must not touch it"


def _dag_visible(stack) -> bool:
    try:
        return stack.api("GET", f"/dags/{DAG_ID}")["dag_id"] == DAG_ID
    except AssertionError:
        return False


def _midnight(day: date) -> datetime:
    return datetime.combine(day, dtime.min, tzinfo=timezone.utc)
