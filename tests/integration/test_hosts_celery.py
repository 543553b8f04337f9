"""Two Docker hosts behind Airflow's CeleryExecutor, on this machine (issue 14): the main engine is host-a, a
second dockerd of the test's own is host-b, each behind its own dood-proxy (`--host`), with a Celery worker
per host (worker a on queue `default` with DOOD_HOST=host-a, worker b on `host-b` with DOOD_HOST=host-b), a
Redis broker, and a real scheduler, dag-processor, triggerer and api-server (celery_stack.py). One config
(hosts_celery.yaml) names both hosts; both engines see one directory, the shared storage of the pipeline.

Where a container ran, how many there were and what they carry is read from the engines (their containers,
labels and events), never from what dood or Airflow logs; task states come from the REST API.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest
import requests

from dood.naming import HOST_LABEL, MANAGED_LABEL, STACK_LABEL
from tests.integration.airflow_stack import MAIN_ENGINE_URL, AirflowStack, EngineEvents
from tests.integration.celery_stack import (
    HOST_B_WORKER_HOSTNAME,
    IMAGE,
    STACK,
    CeleryWorker,
    kill_service,
    two_hosts,
)

PREFIX = "dood_hc_"  # not "dood_it": other sessions' integration tests remove every dood_it* container
STACK_FILTER = f"{STACK_LABEL}={STACK}"
SLEEPER = "trap 'exit 0' TERM; while :; do sleep 1; done"  # a planted container a SIGTERM ends at once


@pytest.fixture(scope="module")
def hosts(tmp_path_factory, docker_api):
    """host-b's engine, both proxies, Redis, Airflow under CeleryExecutor and a worker per host."""
    if os.geteuid() != 0:
        pytest.skip("a second dockerd (own bridge, data root, socket) needs root")
    home = tmp_path_factory.mktemp("celery-hosts")
    # a killed triggerer's triggers go to the next one once it is this many seconds silent (default 30)
    with two_hosts(home, AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD="10") as arranged:
        events = {"a": _Recorder(MAIN_ENGINE_URL), "b": _Recorder(arranged.engine_b.url)}
        try:
            yield _Hosts(arranged.stack, arranged.workers, arranged.engine_b, docker_api, events, arranged.proxy_b_url)
        finally:
            for recorder in events.values():
                recorder.stop()


class _Recorder(EngineEvents):
    """Every container event of the test's stack on one engine, from the fixture's start on."""

    def __init__(self, url: str) -> None:
        super().__init__(url, dag_id="", label=STACK_FILTER)

    def created(self, dag_id: str, run_id: str | None = None) -> list[dict]:
        found = []
        for event in self.of("create"):
            labels = event["Actor"]["Attributes"]
            if labels.get("dood.dag_id") == dag_id and run_id in (None, labels.get("dood.run_id")):
                found.append(event)
        return found


class _Hosts:
    """The arrangement as the tests use it: both engines' APIs and events, REST reads that wait out a busy
    api-server."""

    def __init__(self, stack, workers, engine_b, api_a, events, proxy_b_url) -> None:
        self.stack: AirflowStack = stack
        self.workers: dict[str, CeleryWorker] = workers
        self.engine_b = engine_b
        self.api = {"a": api_a, "b": engine_b.api()}
        self.events: dict[str, _Recorder] = events
        self.proxy_b_url = proxy_b_url

    def containers(self, host: str, dag_id: str, run_id: str | None = None) -> list[dict]:
        labels = [f"{MANAGED_LABEL}=true", STACK_FILTER, f"dood.dag_id={dag_id}"]
        labels += [f"dood.run_id={run_id}"] if run_id else []
        return self.api[host].containers(all=True, filters={"label": labels})

    def ask(self, read, *args, patience: float = 120):
        """A REST read, asked again while the api-server is too busy to answer (its one worker also serves
        every task's Execution API calls, on SQLite; other sessions may load this machine)."""
        deadline = time.monotonic() + patience
        while True:
            try:
                return read(*args)
            except (requests.RequestException, AssertionError) as exc:
                if time.monotonic() > deadline or " 404 " in str(exc):
                    raise
                time.sleep(1)

    def task(self, dag_id: str, run_id: str) -> dict:
        return self.ask(self.stack.task, dag_id, run_id)

    def xcom(self, dag_id: str, run_id: str, task_id: str = "run"):
        return self.ask(self.stack.xcom, dag_id, run_id, task_id)

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 240) -> str:
        def ended() -> bool:
            return self.ask(self.stack.run_state, dag_id, run_id) in ("success", "failed")

        self.stack._wait_until(ended, timeout, f"{dag_id} {run_id} to end", every=1)
        return self.ask(self.stack.run_state, dag_id, run_id)

    def wait_for_task(self, dag_id: str, run_id: str, state: str, timeout: float = 180) -> None:
        def reached() -> bool:
            return self.task(dag_id, run_id)["state"] == state

        self.stack._wait_until(reached, timeout, f"{dag_id} {run_id} to be {state}", every=1)

    def task_log(self, dag_id: str, run_id: str, try_number: int, task_id: str = "run") -> str:
        """The task log of one try as the main api-server serves it (REST), "" while it has none."""
        try:
            return self.stack.task_log(dag_id, run_id, try_number, task_id)
        except (requests.RequestException, AssertionError):
            return ""

    def container_tab(self, dag_id: str, run_id: str, task_id: str = "run") -> str:
        """The Container tab's page (the dood plugin on the main api-server), as a signed-in user."""
        token = requests.get(f"{self.stack.api_url}/auth/token", timeout=30).json()["access_token"]
        page = requests.get(
            f"{self.stack.api_url}/dood/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/container",
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        assert page.status_code == 200, f"Container tab: {page.status_code} {page.text[:500]}"
        return page.text

    def why(self, *workers: str) -> str:
        return "\n".join(
            [self.stack.log_tail("scheduler", 3000)] + [self.workers[w].log_tail(3000) for w in workers or "ab"]
        )


def test_prepare_on_a_train_on_b_each_on_its_engine_through_the_shared_root(hosts):
    dag_id = f"{PREFIX}pipeline"
    run_id = hosts.ask(hosts.stack.trigger, dag_id)
    assert hosts.wait_for_run(dag_id, run_id) == "success", hosts.why()
    on_a = {c["Labels"]["dood.task_id"]: c for c in hosts.containers("a", dag_id, run_id)}
    on_b = {c["Labels"]["dood.task_id"]: c for c in hosts.containers("b", dag_id, run_id)}
    assert sorted(on_a) == ["evaluate", "prepare"]
    assert sorted(on_b) == ["train"]
    assert {c["Labels"][HOST_LABEL] for c in on_a.values()} == {"host-a"}
    assert on_b["train"]["Labels"][HOST_LABEL] == "host-b"
    # the engines' own records agree (and show both event recorders work): a create per step, on its engine
    created = {
        h: sorted(e["Actor"]["Attributes"]["dood.task_id"] for e in hosts.events[h].created(dag_id, run_id))
        for h in "ab"
    }
    assert created == {"a": ["evaluate", "prepare"], "b": ["train"]}
    assert all(c["State"] == "exited" and "Exited (0)" in c["Status"] for c in [*on_a.values(), *on_b.values()])
    # train, on B, read what prepare wrote on A; evaluate, on A, read what train wrote on B
    assert hosts.xcom(dag_id, run_id, "train") == {"read": f"rows of {run_id}"}
    assert hosts.xcom(dag_id, run_id, "evaluate") == {"model": f"rows of {run_id}"}
    work_dirs = {
        m["Source"] for c in (on_a["prepare"], on_b["train"]) for m in c["Mounts"] if m["Destination"] == "/dood/work"
    }
    assert len(work_dirs) == 1, f"prepare and train mounted different directories: {work_dirs}"
    assert (Path(work_dirs.pop()) / "model.txt").read_text().strip() == f"rows of {run_id}"


def test_steps_pinned_to_host_b_never_touch_engine_a(hosts):
    dag_id = f"{PREFIX}pinned"
    runs = [hosts.ask(hosts.stack.trigger, dag_id) for _ in range(6)]
    states = {run_id: hosts.wait_for_run(dag_id, run_id) for run_id in runs}
    assert set(states.values()) == {"success"}, (states, hosts.why("b"))
    for run_id in runs:
        (container,) = hosts.containers("b", dag_id, run_id)
        assert container["Labels"][HOST_LABEL] == "host-b"
        assert len(hosts.events["b"].created(dag_id, run_id)) == 1
    assert hosts.containers("a", dag_id) == []
    assert hosts.events["a"].created(dag_id) == [], "engine A saw a create of a step pinned to host-b"


def test_a_mapped_step_placed_on_b_runs_every_index_on_b(hosts):
    """Mapped tasks are routed by the partial's queue: each index on worker b, each container on engine B."""
    dag_id = f"{PREFIX}mapped"
    run_id = hosts.ask(hosts.stack.trigger, dag_id)
    assert hosts.wait_for_run(dag_id, run_id) == "success", hosts.why()
    on_b = hosts.containers("b", dag_id, run_id)
    assert sorted(c["Labels"]["dood.map_index"] for c in on_b) == ["0", "1"]
    assert {c["Labels"][HOST_LABEL] for c in on_b} == {"host-b"}
    assert hosts.containers("a", dag_id) == [] and hosts.events["a"].created(dag_id) == []


def test_worker_b_sigkilled_mid_training_the_retry_on_b_adopts_the_container(hosts):
    dag_id = f"{PREFIX}killed"
    run_id = hosts.ask(hosts.stack.trigger, dag_id)
    hosts.stack._wait_until(
        lambda: any(c["State"] == "running" for c in hosts.containers("b", dag_id, run_id)), 180, "training on B"
    )
    hosts.workers["b"].kill()
    hosts.workers["b"].start()
    assert hosts.wait_for_run(dag_id, run_id) == "success", hosts.why("b")
    ti = hosts.task(dag_id, run_id)
    assert ti["try_number"] == 2, "the retry ran"
    assert hosts.xcom(dag_id, run_id) == {"try": 1}, "the result of try 1's container, adopted"
    assert len(hosts.events["b"].created(dag_id, run_id)) == 1, "one container ever on B"
    assert len(hosts.containers("b", dag_id, run_id)) == 1
    assert hosts.containers("a", dag_id) == [] and hosts.events["a"].created(dag_id) == []


def test_a_deferred_task_on_b_resumes_after_the_triggerer_is_killed_and_started_again(hosts):
    dag_id = f"{PREFIX}deferred"
    run_id = hosts.ask(hosts.stack.trigger, dag_id)
    hosts.wait_for_task(dag_id, run_id, "deferred")
    time.sleep(2)  # the triggerer runs the trigger
    kill_service(hosts.stack, "triggerer")
    assert hosts.wait_for_run(dag_id, run_id) == "success", hosts.stack.log_tail("triggerer")
    assert hosts.task(dag_id, run_id)["try_number"] == 1
    assert hosts.xcom(dag_id, run_id) == {"try": 1}
    assert len(hosts.events["b"].created(dag_id, run_id)) == 1
    assert hosts.containers("a", dag_id) == []


def test_the_janitor_of_host_b_removes_an_orphan_on_b_and_nothing_else_and_b_s_proxy_hides_a(hosts):
    def plant(api, name: str, **labels: str) -> str:
        container = api.create_container(IMAGE, ["sh", "-c", SLEEPER], name=name, labels=labels)
        api.start(container["Id"])
        return container["Id"]

    ours = {MANAGED_LABEL: "true", STACK_LABEL: STACK, "dood.task_id": "gone", "dood.run_id": "gone"}
    suffix = os.getpid()
    orphan_b = plant(
        hosts.api["b"], f"hc-orphan-b-{suffix}", **ours, **{HOST_LABEL: "host-b", "dood.dag_id": f"{PREFIX}orphan"}
    )
    kept = {
        "orphan of host-a, on engine A": (
            "a",
            plant(
                hosts.api["a"],
                f"hc-orphan-a-{suffix}",
                **ours,
                **{HOST_LABEL: "host-a", "dood.dag_id": f"{PREFIX}orphan"},
            ),
        ),
        "labelled host-a, on engine B": (
            "b",
            plant(
                hosts.api["b"],
                f"hc-a-on-b-{suffix}",
                **ours,
                **{HOST_LABEL: "host-a", "dood.dag_id": f"{PREFIX}orphan"},
            ),
        ),
        "not dood's, on engine B": ("b", plant(hosts.api["b"], f"hc-foreign-{suffix}", **{STACK_LABEL: STACK})),
    }
    through_b = docker.APIClient(base_url=hosts.proxy_b_url, version="auto", timeout=30)
    listed = {c["Id"] for c in through_b.containers(all=True)}
    assert orphan_b in listed
    assert not listed & {cid for _, cid in kept.values()}, "B's proxy lists a container that is not host-b's"
    for _, cid in kept.values():
        with pytest.raises(docker.errors.APIError):
            through_b.inspect_container(cid)
    janitor = subprocess.run(
        [str(Path(sys.executable).with_name("dood-janitor")), "--api-url", hosts.stack.api_url, "--ttl-hours", "1"],
        env={**hosts.stack.env, "DOOD_HOST": "host-b"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert janitor.returncode == 0, janitor.stdout + janitor.stderr
    assert hosts.api["b"].containers(all=True, filters={"id": orphan_b}) == [], janitor.stdout
    for label, (engine, cid) in kept.items():
        (left,) = hosts.api[engine].containers(all=True, filters={"id": cid})
        assert left["State"] == "running", f"{label}: {left['State']}"
        hosts.api[engine].remove_container(cid, force=True)


def test_with_worker_b_stopped_its_tasks_stay_queued_and_run_when_it_comes_back(hosts):
    dag_id = f"{PREFIX}pinned"
    hosts.workers["b"].stop()
    run_id = hosts.ask(hosts.stack.trigger, dag_id)
    hosts.wait_for_task(dag_id, run_id, "queued")
    missing = subprocess.run(
        [sys.executable, "-m", "dood.hosts", "workers"],
        env=hosts.stack.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert "queue host-b: no live worker; tasks placed on host-b stay queued" in missing.stdout
    time.sleep(10)  # what a user sees meanwhile
    assert hosts.task(dag_id, run_id)["state"] == "queued"
    assert hosts.containers("b", dag_id, run_id) == [] and hosts.events["b"].created(dag_id, run_id) == []
    hosts.workers["b"].start()
    assert hosts.wait_for_run(dag_id, run_id) == "success", hosts.why("b")
    (container,) = hosts.containers("b", dag_id, run_id)
    assert container["Labels"][HOST_LABEL] == "host-b"
    assert hosts.containers("a", dag_id) == []


def test_the_main_api_server_reads_b_s_task_log_from_the_shared_log_folder_while_it_runs_and_after(hosts):
    """Worker b records a hostname nothing here resolves and serves no logs (as a worker on another machine):
    the api-server reads B's task log from the log folder every host shares (the compose stacks' DOOD_LOG_ROOT),
    and the Container tab reads B's container through B's read-only listener (hosts.host-b.ui_docker)."""
    dag_id = f"{PREFIX}logged"
    run_id = hosts.ask(hosts.stack.trigger, dag_id)
    first, last = f"first line of {run_id}", f"last line of {run_id}"
    hosts.stack._wait_until(
        lambda: first in hosts.task_log(dag_id, run_id, 1) and hosts.task(dag_id, run_id)["state"] == "running",
        180,
        f"the REST task log of {dag_id} try 1 to show {first!r} while the task runs",
        every=1,
    )
    assert hosts.task(dag_id, run_id)["hostname"] == HOST_B_WORKER_HOSTNAME, "the task ran on worker b"
    tab = hosts.container_tab(dag_id, run_id)
    assert first in tab, f"the Container tab does not show B's output tail:\n{tab[-3000:]}"
    assert hosts.wait_for_run(dag_id, run_id) == "success", hosts.why("b")
    log = hosts.task_log(dag_id, run_id, 1)
    assert first in log and last in log, log[-3000:]
    assert "Could not read served logs" not in log, log[-3000:]
    assert last in hosts.container_tab(dag_id, run_id)
    (container,) = hosts.containers("b", dag_id, run_id)
    assert container["Labels"][HOST_LABEL] == "host-b"


def test_without_the_shared_log_folder_b_s_task_log_is_out_of_reach_as_in_issue_25(hosts, tmp_path):
    """The control: worker b with a log folder of its own (a deployment without DOOD_LOG_ROOT): the api-server
    finds no file and cannot reach B's worker by its hostname, which is what the user of issue 25 saw."""
    dag_id = f"{PREFIX}logged"
    worker = hosts.workers["b"]
    worker.stop()
    worker.env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"] = str(tmp_path / "b-own-logs")
    try:
        worker.start()
        run_id = hosts.ask(hosts.stack.trigger, dag_id)
        assert hosts.wait_for_run(dag_id, run_id) == "success", hosts.why("b")
        log = hosts.task_log(dag_id, run_id, 1)
        assert "Could not read served logs: HTTPConnectionPool(host=" in log, log[-3000:]
        assert "NameResolutionError" in log and f"resolve \\'{HOST_B_WORKER_HOSTNAME}" in log, log[-3000:]
        assert f"first line of {run_id}" not in log, log[-3000:]
    finally:
        worker.stop()
        del worker.env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"]
        worker.start()


def test_worker_b_down_for_20_s_mid_training_with_the_pipeline_defaults_follows_the_same_container_in_2_min(hosts):
    """The pipeline config's default retries (1) and retry delay (15 s): worker b SIGKILLed while train runs on
    B, started again 20 s later; try 1 fails on the heartbeat timeout (12 s here, compose: 60 s), try 2 follows
    the same container. benchmarks/bench_worker_restart.py measures it with the compose stacks' timeout."""
    dag_id = f"{PREFIX}restart"
    run_id = hosts.ask(hosts.stack.trigger, dag_id)
    hosts.stack._wait_until(
        lambda: any(
            c["State"] == "running" and c["Labels"]["dood.task_id"] == "train"
            for c in hosts.containers("b", dag_id, run_id)
        ),
        240,
        "train's container running on B",
    )
    killed = time.monotonic()
    hosts.workers["b"].kill()
    hosts.stack._wait_until(lambda: time.monotonic() - killed >= 20, 30, "20 s with worker b down")
    hosts.workers["b"].start()
    hosts.stack._wait_until(
        lambda: "Reattaching to container" in hosts.task_log(dag_id, run_id, 2, "train"),
        240,
        "train's try 2 to reattach to try 1's container on B",
        every=1,
    )
    followed = time.monotonic() - killed
    assert followed < 120, f"the same container was followed again {followed:.0f} s after the kill"
    assert hosts.wait_for_run(dag_id, run_id, timeout=300) == "success", hosts.why("b")
    assert len(hosts.events["b"].created(dag_id, run_id)) == 1, "one create on B: train's, never a second"
    assert hosts.xcom(dag_id, run_id, "train") == {"read": f"rows of {run_id}"}
    assert hosts.ask(hosts.stack.task, dag_id, run_id, "train")["try_number"] == 2
