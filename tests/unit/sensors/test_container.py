"""DoodContainerSensor's own decisions (dood.sensors.container), with the Docker side stood in for: which
container it waits for (only one this stack owns; the newest try of an upstream task), when a poke is done,
and how a trigger's timeout or error event ends it. Waiting on a real engine: tests/integration."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowSensorTimeout
from docker.errors import NotFound

import dood.sensors.container as sensor_module
from dood.config.model import DoodConfig
from dood.exceptions import DoodConfigError, DoodError
from dood.naming import TaskIdentity
from dood.sensors.container import DoodContainerSensor

CONFIG = DoodConfig(runs_root="/runs")
TI = SimpleNamespace(dag_id="dag", task_id="wait", run_id="manual__1", map_index=-1, try_number=1, start_date=None)


def _labels(task_id: str, try_number: int, stack: str = "dood") -> dict[str, str]:
    identity = TaskIdentity(dag_id="dag", task_id=task_id, run_id="manual__1", try_number=try_number, stack=stack)
    return identity.labels()


class FakeHook:
    stack = "dood"

    def __init__(self, containers: dict[str, dict]) -> None:
        self.containers = containers  # id -> inspect data
        self.searched: list[dict] = []
        self.api = self

    def inspect_container(self, container_id: str) -> dict:
        if container_id not in self.containers:
            raise NotFound(container_id)
        return self.containers[container_id]

    def find_containers(self, labels: dict[str, str]) -> list[dict]:
        self.searched.append(labels)
        return [
            {"Id": cid, "Labels": c["Config"]["Labels"]}
            for cid, c in self.containers.items()
            if all(c["Config"]["Labels"].get(k) == v for k, v in labels.items())
        ]

    def owns(self, labels: dict[str, str]) -> bool:
        return labels.get("dood.managed") == "true" and labels.get("dood.stack") == self.stack


def _container(cid: str, labels: dict, status: str = "exited") -> dict:
    return {"Id": cid, "Name": f"/dood-{cid}", "Config": {"Labels": labels}, "State": {"Status": status}}


def test_exactly_one_way_to_name_the_container():
    with pytest.raises(DoodConfigError, match="exactly one of container_id or upstream_task_id"):
        DoodContainerSensor(task_id="wait")
    with pytest.raises(DoodConfigError, match="exactly one"):
        DoodContainerSensor(task_id="wait", container_id="x", upstream_task_id="start")
    with pytest.raises(DoodConfigError, match="auto_remove"):
        DoodContainerSensor(task_id="wait", container_id="x", auto_remove="sometimes")


def test_by_id_only_a_container_of_this_stack_is_waited_for():
    hook = FakeHook(
        {"ours": _container("ours", _labels("start", 1)), "theirs": _container("theirs", _labels("start", 1, "other"))}
    )
    handle, state = DoodContainerSensor(task_id="wait", container_id="ours")._locate(hook, CONFIG, {"ti": TI})
    assert (handle.container_id, handle.container_name, handle.run_dir) == ("ours", "dood-ours", "/runs/dood-ours")
    assert state == {"Status": "exited"}
    with pytest.raises(DoodError, match="not managed by this dood stack"):
        DoodContainerSensor(task_id="wait", container_id="theirs")._locate(hook, CONFIG, {"ti": TI})
    with pytest.raises(DoodError, match="does not exist"):
        DoodContainerSensor(task_id="wait", container_id="gone")._locate(hook, CONFIG, {"ti": TI})


def test_by_upstream_task_the_newest_try_of_that_task_in_this_run_is_waited_for():
    hook = FakeHook(
        {
            "try1": _container("try1", _labels("start", 1)),
            "try3": _container("try3", _labels("start", 3)),
            "try2": _container("try2", _labels("start", 2)),
            "other": _container("other", _labels("other_task", 9)),
        }
    )
    handle, _ = DoodContainerSensor(task_id="wait", upstream_task_id="start")._locate(hook, CONFIG, {"ti": TI})
    assert handle.container_id == "try3"
    assert hook.searched[0]["dood.task_id"] == "start" and hook.searched[0]["dood.run_id"] == "manual__1"
    with pytest.raises(DoodError, match="no container of task 'missing' in run 'manual__1'"):
        DoodContainerSensor(task_id="wait", upstream_task_id="missing")._locate(hook, CONFIG, {"ti": TI})


@pytest.mark.parametrize("status", ["created", "running", "restarting", "paused"])
def test_a_poke_is_not_done_while_the_container_goes_on(monkeypatch, status):
    hook = FakeHook({"c": _container("c", _labels("start", 1), status)})
    monkeypatch.setattr(sensor_module, "load_config", lambda path=None: CONFIG)
    monkeypatch.setattr(sensor_module, "DoodHook", lambda config, **kwargs: hook)
    finished = []
    monkeypatch.setattr(DoodContainerSensor, "_finish", lambda self, *args, **kwargs: finished.append(args))
    assert DoodContainerSensor(task_id="wait", container_id="c").poke({"ti": TI}).is_done is False
    assert finished == []


def test_a_poke_after_the_end_finishes_it_and_returns_its_result(monkeypatch):
    hook = FakeHook({"c": _container("c", _labels("start", 1), "exited")})
    monkeypatch.setattr(sensor_module, "load_config", lambda path=None: CONFIG)
    monkeypatch.setattr(sensor_module, "DoodHook", lambda config, **kwargs: hook)
    monkeypatch.setattr(
        DoodContainerSensor, "_finish", lambda self, config, launcher, handle: {"of": handle.container_id}
    )
    done = DoodContainerSensor(task_id="wait", container_id="c").poke({"ti": TI})
    assert done.is_done is True and done.xcom_value == {"of": "c"}


@pytest.mark.parametrize(
    ("event", "error", "message"),
    [
        ({"status": "timeout", "container_id": "c"}, AirflowSensorTimeout, "still running at the timeout"),
        ({"status": "error", "container_id": "c", "message": "boom"}, DoodError, "failed: boom"),
    ],
)
def test_a_trigger_event_that_is_not_an_end_ends_the_sensor(monkeypatch, event, error, message):
    monkeypatch.setattr(sensor_module, "load_config", lambda path=None: CONFIG)
    monkeypatch.setattr(sensor_module, "DoodHook", lambda config, **kwargs: FakeHook({}))
    sensor = DoodContainerSensor(task_id="wait", container_id="c", deferrable=True)
    handle = {"container_id": "c", "container_name": "dood-c", "run_dir": "/runs/dood-c"}
    with pytest.raises(error, match=message):
        sensor.execute_complete({"ti": TI}, event, handle=handle)


def test_a_sensor_the_handoff_label_does_not_count_says_the_janitor_may_remove_it(monkeypatch):
    said: list[str] = []
    told = SimpleNamespace(warning=lambda message, *args: said.append(message % args), info=lambda *a: None)
    monkeypatch.setattr(DoodContainerSensor, "log", property(lambda self: told))

    def locate(handoff):
        labels = _labels("start", 1) | ({"dood.handoff": handoff} if handoff is not None else {})
        hook = FakeHook({"c1": _container("c1", labels, "running")})
        said.clear()
        DoodContainerSensor(task_id="wait", upstream_task_id="start")._locate(hook, CONFIG, {"ti": TI})
        return " ".join(said)

    assert locate("wait") == "" and locate("*") == ""  # counted: by name, or the run waits
    assert "handed off to other, not to wait: the janitor removes it once those ended" in locate("other")
    assert "was not handed off" in locate(None)


HANDLE = {"container_id": "c" * 64, "container_name": "dood-c", "run_dir": "/runs/dood-c"}


def _broken(path=None):
    raise DoodConfigError("Invalid dood config /x.yaml: not valid YAML: boom")


def test_a_deferred_sensor_gives_its_trigger_what_its_resume_needs_without_a_config(monkeypatch):
    from airflow.sdk.exceptions import TaskDeferred

    hook = FakeHook({HANDLE["container_id"]: _container(HANDLE["container_id"], _labels("start", 1), "running")})
    monkeypatch.setattr(sensor_module, "load_config", lambda path=None: CONFIG)
    monkeypatch.setattr(sensor_module, "DoodHook", lambda config, **kwargs: hook)
    sensor = DoodContainerSensor(task_id="wait", container_id=HANDLE["container_id"], deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({"ti": TI})
    trigger = deferred.value.trigger
    assert trigger.stop_grace_seconds is None  # the sensor only watches: a kill of it leaves the container
    assert trigger.resume["handle"]["container_id"] == HANDLE["container_id"]
    assert trigger.resume["auto_remove"] == "always" and trigger.resume["stack"] == "dood"


def test_a_sensor_resumed_while_its_config_is_unreadable_finishes_with_what_the_trigger_carried(monkeypatch):
    """Config made invalid YAML while the sensor waited; the container exited 0: the result, no DoodConfigError."""
    from dood.lifecycle.completion import resume_carry
    from dood.lifecycle.outcome import RESUME_KEY, wait_event
    from dood.triggers.container import DoodContainerTrigger

    monkeypatch.setattr(sensor_module, "load_config", _broken)
    monkeypatch.setattr(sensor_module, "DoodHook", lambda config, **kwargs: SimpleNamespace(api=None, stack="dood"))
    finished: list = []
    monkeypatch.setattr(
        DoodContainerSensor,
        "_finish",
        lambda self, config, launcher, handle, outcome=None: finished.append((config, handle, outcome)) or {"ok": 1},
    )
    from dood.lifecycle.completion import ContainerHandle

    carry = resume_carry(
        ContainerHandle.from_xcom(HANDLE), CONFIG, auto_remove=None, stop_grace_seconds=30, stack="dood"
    )
    trigger = DoodContainerTrigger.from_config(CONFIG, HANDLE["container_id"], stop_grace_seconds=None, resume=carry)
    event = trigger._for_resume(wait_event("success", HANDLE["container_id"], "exited with code 0.", exit_code=0))
    assert RESUME_KEY in event
    sensor = DoodContainerSensor(task_id="wait", container_id=HANDLE["container_id"], deferrable=True)

    assert sensor.execute_complete({"ti": TI}, event, handle=HANDLE) == {"ok": 1}
    ((config, handle, outcome),) = finished
    assert config.docker.url == CONFIG.reachable_docker.url and config.runs_root == "/runs"
    assert handle.container_id == HANDLE["container_id"] and outcome.exit_code == 0


def test_a_sensor_resumed_on_an_old_event_with_an_unreadable_config_says_what_is_missing(monkeypatch):
    from dood.lifecycle.outcome import wait_event

    monkeypatch.setattr(sensor_module, "load_config", _broken)
    sensor = DoodContainerSensor(task_id="wait", container_id=HANDLE["container_id"], deferrable=True)
    event = wait_event("success", HANDLE["container_id"], "exited with code 0.", exit_code=0)
    with pytest.raises(DoodConfigError, match="does not carry the Docker endpoint"):
        sensor.execute_complete({"ti": TI}, event, handle=HANDLE)


def test_a_sensor_resumed_by_another_containers_event_waits_again_for_its_own(monkeypatch):
    """SQLite hands a deleted trigger's id to the next trigger: an old trigger's event is not this one's."""
    from airflow.sdk.exceptions import TaskDeferred

    from dood.lifecycle.outcome import wait_event

    monkeypatch.setattr(sensor_module, "load_config", lambda path=None: CONFIG)
    monkeypatch.setattr(sensor_module, "DoodHook", lambda config, **kwargs: FakeHook({}))
    monkeypatch.setattr(DoodContainerSensor, "_finish", lambda *a, **k: pytest.fail("finished on another's event"))
    sensor = DoodContainerSensor(task_id="wait", container_id=HANDLE["container_id"], deferrable=True)
    event = wait_event("success", "d" * 64, "exited with code 0.", exit_code=0)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute_complete({"ti": TI}, event, handle=HANDLE)
    assert deferred.value.trigger.container_id == HANDLE["container_id"]
    assert deferred.value.kwargs == {"handle": HANDLE}
