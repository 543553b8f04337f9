"""DoodContainerSensor's own decisions (dood.sensors.container), with the Docker side stood in for: which
container it waits for (only one this stack owns; the newest try of an upstream task), when a poke is done,
and how a trigger's timeout or error event ends it. Waiting on a real engine: tests/integration."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowSensorTimeout
from docker.errors import NotFound

import dood.sensors.container as sensor_module
from dood.config import DoodConfig
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
