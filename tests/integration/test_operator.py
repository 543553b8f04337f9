"""DoodContainerOperator on the real Docker engine, run by a real Airflow through `dag.test()`."""

from __future__ import annotations

import os

import pytest

from dood.mounts.run_directories import default_user
from tests.integration.airflow_stack import MAIN_ENGINE_URL, EngineEvents
from tests.integration.conftest import TEST_IMAGE, run_id_for, task_state, xcom_value


def test_logs_reach_task_log_and_json_result_becomes_xcom(dag_run, next_date, ours, capfd):
    dagrun = dag_run("dood_it_success", next_date)
    out = capfd.readouterr()
    log = out.out + out.err
    assert dagrun.state == "success"
    for line in ("hello from dood_it_success", "to stderr", "step 0", "step 2"):
        assert line in log
    assert "s3cret-value" not in log  # private_environment is never logged
    assert xcom_value(dagrun) == {"return_value": {"accuracy": 0.93, "rows": 3, "token_seen": "12"}}
    assert ours("dood_it_success") == []  # auto_remove: always


def test_no_result_file_means_no_value_not_the_last_log_line(dag_run, next_date, ours):
    dagrun = dag_run("dood_it_no_result", next_date)
    assert dagrun.state == "success"
    assert xcom_value(dagrun) == {}


def test_failing_exit_code_fails_with_code_and_last_50_lines(dag_run, next_date, ours, capfd):
    dagrun = dag_run("dood_it_fail", next_date)
    log = capfd.readouterr().out
    assert dagrun.state == "failed"
    assert task_state(dagrun) == "failed"
    message = log[log.index("ContainerFailed") :]
    assert "exited with code 7" in message
    assert "Last 50 log lines:\nline 11\n" in message and "line 60" in message
    assert ours("dood_it_fail") == []


def test_skip_on_exit_code_skips(dag_run, next_date, ours):
    dagrun = dag_run("dood_it_skip", next_date)
    assert task_state(dagrun) == "skipped"


def test_retry_gets_a_new_name_and_no_conflict(dag_run, next_date, ours):
    dagrun = dag_run("dood_it_retry", next_date)
    assert dagrun.state == "success"
    containers = ours("dood_it_retry")
    assert sorted(c["Labels"]["dood.try_number"] for c in containers) == ["1", "2"]
    names = {c["Names"][0] for c in containers}
    assert len(names) == 2
    assert {c["Labels"]["dood.run_id"] for c in containers} == {run_id_for(next_date)}


def test_exited_leftover_of_ours_is_cleared(dag_run, next_date, ours, docker_api):
    from dood.naming import TaskIdentity

    identity = TaskIdentity("dood_it_leftover", "run", run_id_for(next_date))
    leftover = docker_api.create_container(
        TEST_IMAGE, ["true"], name=identity.container_name(), labels=identity.labels()
    )
    dagrun = dag_run("dood_it_leftover", next_date)
    assert dagrun.state == "success"
    assert all(c["Id"] != leftover["Id"] for c in ours("dood_it_leftover"))
    with pytest.raises(Exception, match="No such container"):
        docker_api.inspect_container(leftover["Id"])


def test_foreign_same_named_container_is_left_alone(dag_run, next_date, ours, docker_api, capfd):
    from dood.naming import TaskIdentity

    name = TaskIdentity("dood_it_foreign", "run", run_id_for(next_date)).container_name()
    foreign = docker_api.create_container(TEST_IMAGE, ["sleep", "300"], name=name, labels={"owner": "someone-else"})
    docker_api.start(foreign["Id"])
    try:
        dagrun = dag_run("dood_it_foreign", next_date)
        log = capfd.readouterr().out
        assert dagrun.state == "failed"
        assert "ForeignContainerError" in log and "never stops or removes containers it does not own" in log
        state = docker_api.inspect_container(foreign["Id"])["State"]
        assert state["Running"] is True
    finally:
        docker_api.remove_container(foreign["Id"], force=True)


def test_mapped_bind_mount_writes_where_the_map_says_on_the_host(dag_run, next_date, ours, tmp_path_factory):
    import dood_it_dags

    root = dood_it_dags.ROOT
    airflow_view, host_view = root / "airflow-view", root / "host-view"
    for base in (airflow_view, host_view):
        (base / "out").mkdir(parents=True, exist_ok=True)
        (base / "in").mkdir(parents=True, exist_ok=True)
    (host_view / "in" / "input.txt").write_text("from the host side\n")
    uid, gid = (int(n) for n in default_user().split(":"))
    os.chown(host_view / "out", uid, gid)  # a rw mount must be writable by the (non-root) container user
    (root / "mapped.yaml").write_text(
        f"runs_root: {root / 'runs'}\nmount_map:\n  - airflow_path: {airflow_view}\n    host_path: {host_view}\n"
        f"policy:\n  allowed_host_roots: ['{root}']\n"
    )
    dagrun = dag_run("dood_it_mapped_mount", next_date)
    assert dagrun.state == "success"
    assert (host_view / "out" / "written-by-container.txt").read_text() == "from the host side\n"
    assert not (airflow_view / "out" / "written-by-container.txt").exists()


def test_unmapped_mount_is_refused_before_any_container_exists(dag_run, next_date, ours, capfd):
    import dood_it_dags

    root = dood_it_dags.ROOT
    (root / "strict.yaml").write_text(
        f"runs_root: {root / 'runs'}\nmount_discovery:\n  mode: 'off'\n"
        f"mount_map:\n  - airflow_path: {root}\n    host_path: {root}\n"
    )
    dagrun = dag_run("dood_it_unmapped_mount", next_date)
    log = capfd.readouterr().out
    assert dagrun.state == "failed"
    assert "MountNotMapped" in log and "mounts[0]" in log and "/etc" in log
    assert ours("dood_it_unmapped_mount") == []


def test_execution_timeout_stops_and_removes_the_container(dag_run, next_date, ours, capfd):
    dagrun = dag_run("dood_it_timeout", next_date)
    log = capfd.readouterr().out
    assert dagrun.state == "failed"
    assert "started" in log and "Timeout" in log
    assert ours("dood_it_timeout") == []


def test_the_no_retry_exit_code_fails_at_once_without_spending_retries(dag_run, next_date, ours, capfd):
    creates = EngineEvents(MAIN_ENGINE_URL, "dood_it_no_retry")  # recorded as they happen, not the daemon's buffer
    try:
        dagrun = dag_run("dood_it_no_retry", next_date)
    finally:
        creates.stop()
    log = capfd.readouterr().out
    assert dagrun.state == "failed" and task_state(dagrun) == "failed"
    assert "ContainerFailedNoRetry" in log and "exited with code 97" in log and "FAILED: accuracy" in log
    assert len(creates.of("create")) == 1  # counted by the engine: one try, though retries=3 were left
    assert ours("dood_it_no_retry") == []


@pytest.mark.parametrize(
    ("dag_id", "reason"),
    [
        ("dood_it_result_link", "is a symlink"),  # to a file the worker can read: never returned as XCom
        ("dood_it_result_zero", "is a symlink"),  # to /dev/zero: never read until MemoryError
        ("dood_it_result_fifo", "not a regular file"),  # a FIFO: never blocks the worker
    ],
)
def test_a_result_file_the_container_planted_is_refused_not_followed(dag_run, next_date, ours, capfd, dag_id, reason):
    dagrun = dag_run(dag_id, next_date)
    log = capfd.readouterr().out
    assert dagrun.state == "failed" and "planted" in log
    assert "ResultFileError" in log and reason in log
    assert xcom_value(dagrun) == {}  # and a FIFO did not hang it (pytest-timeout would have said so)
    assert ours(dag_id) == []


def test_more_cpus_than_the_host_has_is_refused_before_any_container(dag_run, next_date, ours, capfd):
    dagrun = dag_run("dood_it_too_many_cpus", next_date)
    log = capfd.readouterr().out
    assert dagrun.state == "failed"
    assert "run: resources.cpus: 512 is more than the" in log and "CPUs of the Docker host" in log
    assert ours("dood_it_too_many_cpus") == []


def test_oom_kill_is_reported(dag_run, next_date, ours, capfd):
    dagrun = dag_run("dood_it_oom", next_date)
    log = capfd.readouterr().out
    assert dagrun.state == "failed"
    assert "out of memory" in log
