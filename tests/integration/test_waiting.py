"""Waiting without a worker slot: deferrable operator, operator + sensor split (poke, reschedule, deferrable)."""

from __future__ import annotations

import time

import pytest

from dood.naming import TaskIdentity
from tests.integration.conftest import task_state, xcom_value


def test_deferrable_operator_brings_logs_and_result(dag_run, next_date, ours, capfd):
    dagrun = dag_run("dood_it_deferrable", next_date)
    log = capfd.readouterr().out
    assert dagrun.state == "success"
    assert "deferred-start" in log and "deferred-end" in log
    assert xcom_value(dagrun)["return_value"] == {"done": True, "try": 1}
    assert ours("dood_it_deferrable") == []


def test_execution_timeout_is_honoured_while_deferred(dag_run, next_date, ours, capfd):
    dagrun = dag_run("dood_it_deferrable_timeout", next_date)
    log = capfd.readouterr().out
    assert dagrun.state == "failed"
    assert "outlived execution_timeout" in log
    # The trigger that owned the container started its stop-then-remove at the deadline, in a process of its
    # own (it may outlive the run): wait for it, bounded by the grace period and a margin.
    deadline = time.monotonic() + 60
    while ours("dood_it_deferrable_timeout"):
        assert time.monotonic() < deadline, "the timed-out container was not removed within 60 s of the run's end"
        time.sleep(0.5)


@pytest.mark.parametrize("mode", ["poke", "reschedule", "deferrable"])
def test_sensor_waits_for_a_started_container(mode, dag_run, next_date, ours, capfd):
    dagrun = dag_run(f"dood_it_sensor_{mode}", next_date)
    log = capfd.readouterr().out
    assert dagrun.state == "success", log[-3000:]
    handle = xcom_value(dagrun, "start")["return_value"]
    assert handle["container_name"] == TaskIdentity(f"dood_it_sensor_{mode}", "start", dagrun.run_id).container_name()
    assert xcom_value(dagrun, "wait")["return_value"] == {"done": True, "try": 1}
    assert xcom_value(dagrun, "wait_by_handle")["return_value"] == {"done": True, "try": 1}
    assert f"sensed-{mode}" in log
    assert ours(f"dood_it_sensor_{mode}") == []  # the by-handle sensor removed it (auto_remove: always)


def test_sensor_fails_on_non_zero_exit_with_the_log_tail(dag_run, next_date, ours, capfd):
    dagrun = dag_run("dood_it_sensor_fails", next_date)
    log = capfd.readouterr().out
    assert task_state(dagrun, "wait") == "failed"
    assert "exited with code 5" in log and "about to fail" in log
