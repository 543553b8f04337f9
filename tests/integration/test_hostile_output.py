"""Hostile step output on the real engine, through `DoodContainerOperator` and `dag.test()`: result files an
XCom cannot carry fail the task with ResultFileError's message (and no teardown for the exited container);
control sequences reach the task log visible and inert."""

from __future__ import annotations

import pytest

import dood.lifecycle.teardown
from dood.config.model import load_config
from dood.naming import TaskIdentity
from tests.integration.conftest import task_state, xcom_value


@pytest.fixture
def teardowns(monkeypatch):
    """Every teardown process started (`dood.lifecycle.teardown.detach`, still called through): none is expected."""
    started = []
    real = dood.lifecycle.teardown.detach

    def spy(*args, **kwargs):
        started.append(args[1] if len(args) > 1 else kwargs.get("container_id"))
        return real(*args, **kwargs)

    monkeypatch.setattr(dood.lifecycle.teardown, "detach", spy)
    return started


def test_result_files_an_xcom_cannot_carry_fail_the_task_with_the_fix(
    airflow_db, docker_api, ours, next_date, teardowns, capfd
):
    import dood_it_hostile

    dag = dood_it_hostile.results_dag
    dagrun = dag.test(logical_date=next_date, run_after=next_date)
    out = capfd.readouterr()
    log = out.out + out.err
    runs_root = load_config().runs_root
    for task_id, (_, what) in dood_it_hostile.HOSTILE_RESULTS.items():
        name = TaskIdentity(dag.dag_id, task_id, dagrun.run_id).container_name()
        message = f"ResultFileError: Result file {runs_root}/{name}/result.json {what}"
        assert task_state(dagrun, task_id) == "failed", f"{task_id}: waited for the task to fail"
        assert message in log, f"{task_id}: no {message!r} in the task log"
        assert xcom_value(dagrun, task_id) == {}, f"{task_id}: no XCom expected"
        # it exited by itself, and nothing stopped or removed it (auto_remove="never" keeps it to look at)
        state = docker_api.inspect_container(name)["State"]
        assert (state["Status"], state["ExitCode"]) == ("exited", 0), f"{task_id}: {state}"
    assert "write plain JSON: finite numbers" in log
    assert "RecursionError" not in log and "IsADirectoryError" not in log and "Exceeds the limit" not in log
    assert teardowns == [], "a teardown process was started for a container that had already exited"
    assert "then removing it, in pid" not in log
    for task_id, (_, value) in dood_it_hostile.PLAIN_RESULTS.items():
        assert task_state(dagrun, task_id) == "success", f"{task_id}: waited for the task to succeed"
        assert xcom_value(dagrun, task_id) == {"return_value": value}


def test_control_sequences_reach_the_task_log_visible_and_inert(airflow_db, docker_api, ours, next_date, capfd):
    import dood_it_hostile

    dagrun = dood_it_hostile.log_dag.test(logical_date=next_date, run_after=next_date)
    out = capfd.readouterr()
    log = out.out + out.err
    assert dagrun.state == "success", log[-3000:]
    for shown in (
        "before-clear\u241b[2J\u241b[Hafter-clear",
        "link: \u241b]8;;https://evil.example/\u241b\\click-me\u241b]8;;\u241b\\",
        "dcs: \u241bPq#0;2;0;0;0\u241b\\",
        "secret\u2408\u2408\u2408\u2408\u2408\u2408public",
        "Marking task as SUCCESS",  # what a terminal showed of the line, after the log's own prefix
        "bidi: <U+202E>gnp.exe<U+202C>",
        "c1: <U+009B>2J",
        "green-text",
    ):
        assert shown in log, f"no {shown!r} in the task log"
    for raw in ("\x1b[2J", "\x1b]8;;", "\x1bP", "\x08", "real output\r", "\u202e", "\x9b", "\x1b[32mgreen"):
        assert raw not in log, f"{raw!r} reached the task log verbatim"
    assert xcom_value(dagrun) == {"return_value": {"ok": True}}
