"""Handed-off containers (wait=False): the label, who it names, dood-proxy passing it, and the page's view."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import docker

from dood.janitor import MISSING
from dood.lifecycle.handoff import ANY_WAITER, HANDOFF_LABEL, describe, handoff_label, waiters, waiters_of
from dood.lifecycle.launch import ContainerLauncher, ContainerSpec
from dood.naming import TaskIdentity
from dood.ui.rows import HandedOff, TaskKey, build_row, select

NOW = datetime(2026, 12, 6, 12, tzinfo=timezone.utc)


def test_the_label_names_the_sensors_or_the_run():
    assert handoff_label(["wait_b", "wait_a", "wait_a"]) == {HANDOFF_LABEL: "wait_a,wait_b"}
    assert handoff_label([]) == {HANDOFF_LABEL: ANY_WAITER}
    assert waiters({HANDOFF_LABEL: "wait_a,wait_b"}) == ("wait_a", "wait_b")
    assert waiters({HANDOFF_LABEL: "*"}) == () and waiters({}) is None
    # forged or broken values mean the run: the run's end still bounds them
    for odd in ("", ",", "a,b c", "x" * 251, "wait;rm"):
        assert waiters({HANDOFF_LABEL: odd}) == (), odd
    assert describe({HANDOFF_LABEL: "wait"}) == "handed off to wait"
    assert describe({HANDOFF_LABEL: "*"}) == "waited for by the run"


def test_waiters_are_the_downstream_sensors_that_wait_for_the_task():
    from airflow.sdk import DAG
    from airflow.sdk.bases.operator import BaseOperator

    class Sensorish(BaseOperator):
        def __init__(self, *, upstream_task_id=None, container_id=None, **kwargs):
            super().__init__(**kwargs)
            self.upstream_task_id = upstream_task_id
            self.container_id = container_id

    with DAG("d", schedule=None):
        start = BaseOperator(task_id="start")
        by_task = Sensorish(task_id="wait", upstream_task_id="start")
        by_xcom = Sensorish(task_id="wait_xcom", container_id="{{ ti.xcom_pull('start')['container_id'] }}")
        other = Sensorish(task_id="other", upstream_task_id="elsewhere")
        later = Sensorish(task_id="later", upstream_task_id="start")
        start >> [by_task, by_xcom, other]
        by_task >> later
    assert waiters_of(start) == ["later", "wait", "wait_xcom"]
    assert waiters_of(BaseOperator(task_id="alone")) == []


def test_a_handed_off_spec_carries_the_label_and_init_reaches_the_host_config():
    sdk = docker.APIClient(version="1.41")
    identity = TaskIdentity(dag_id="d", task_id="start", run_id="r")
    spec = ContainerSpec(identity=identity, image="img", handed_off_to=["wait"], init=True)
    body = ContainerLauncher(sdk).create_body(spec)
    assert body["Labels"][HANDOFF_LABEL] == "wait" and body["HostConfig"]["Init"] is True
    waited = ContainerLauncher(sdk).create_body(ContainerSpec(identity=identity, image="img"))
    assert HANDOFF_LABEL not in waited["Labels"] and "Init" not in waited["HostConfig"]
    assert (
        ContainerLauncher(sdk).create_body(ContainerSpec(identity=identity, image="img", init=False))["HostConfig"][
            "Init"
        ]
        is False
    )


def test_dood_proxy_passes_the_handoff_label_and_still_drops_other_dood_labels():
    from dood.policy import Policy
    from dood.proxy.identity import IdentityGuard

    guard = IdentityGuard(Policy(), socket_path=None, stack="dood", host=None)
    labels = guard.labels({HANDOFF_LABEL: "wait", "dood.handoffx": "1", "dood.stack": "other", "dood.ttl": "x"})
    assert labels[HANDOFF_LABEL] == "wait"
    assert "dood.handoffx" not in labels and "dood.ttl" not in labels and labels["dood.stack"] == "dood"


def entry(labels, state="running"):
    base = {"dood.managed": "true", "dood.dag_id": "d", "dood.run_id": "r", "dood.task_id": "start"}
    return {"Id": "c1", "Names": ["/dood-d-start"], "State": state, "Labels": {**base, **labels}, "Created": 1}


def test_the_page_shows_who_a_handed_off_container_belongs_to_and_orphans_it_as_the_janitor_does():
    labels = {HANDOFF_LABEL: "wait"}
    key = TaskKey.from_labels(entry(labels)["Labels"])
    assert key.handoff == "wait"
    kept = build_row(entry(labels), ti_state=HandedOff("success", {"wait": "up_for_reschedule"}, "running"))
    assert not kept.orphan and kept.owner == "handed off to wait (up_for_reschedule)" and kept.ti_state == "success"
    ended = build_row(entry(labels), ti_state=HandedOff("success", {"wait": "failed"}, "running"))
    assert ended.orphan and ended.owner == "nobody"
    run_over = build_row(entry({HANDOFF_LABEL: "*"}), ti_state=HandedOff("success", {}, "success"))
    assert run_over.orphan
    by_run = build_row(entry({HANDOFF_LABEL: "*"}), ti_state=HandedOff("success", {}, "running"))
    assert not by_run.orphan and by_run.owner == "waited for by the run (running)"
    plain = build_row(entry({}), ti_state="success")
    assert plain.orphan and plain.owner == "nobody"
    assert not build_row(entry({}, "exited"), ti_state=MISSING).orphan


def test_the_page_shows_a_stop_under_way_and_filters_on_it():
    from dood.ui.rows import Stopping

    stop = Stopping("the janitor: its task instance has ended (failed)", NOW, NOW + timedelta(seconds=5))
    row = build_row(entry({}), ti_state="failed", stopping=stop)
    assert row.shown_state == "stopping" and row.state == "running"
    assert row.as_json()["stopping"]["grace_ends"] == "2026-12-06T12:00:05+00:00"
    assert select([row], dag_id=None, state="stopping") == [row]
    assert build_row(entry({}, "exited"), stopping=stop).stopping is None
