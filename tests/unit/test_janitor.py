"""The janitor's decisions (pure): what is an orphan, what is kept, what is never ours."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from dood.janitor import MISSING, plan

NOW = datetime(2026, 11, 27, 12, tzinfo=timezone.utc)


def container(name, status, labels=None, finished="0001-01-01T00:00:00Z"):
    labels = (
        {
            "dood.managed": "true",
            "dood.stack": "dood",
            "dood.dag_id": "d",
            "dood.task_id": name,
            "dood.run_id": "r",
            "dood.map_index": "-1",
            "dood.try_number": "1",
        }
        if labels is None
        else labels
    )
    return {
        "Id": f"id-{name}",
        "Name": f"/{name}",
        "Config": {"Labels": labels},
        "State": {"Status": status, "FinishedAt": finished},
        "Created": "2026-11-27T00:00:00Z",
    }


def decide(containers, states, ttl=timedelta(hours=24)):
    return {v.name: v.reason for v in plan(containers, lambda labels: states[labels["dood.task_id"]], ttl=ttl, now=NOW)}


def test_running_container_of_an_ended_task_is_an_orphan():
    verdicts = decide([container("a", "running")], {"a": "success"})
    assert verdicts == {"a": "its task instance has ended (success)"}


def test_running_container_of_a_missing_task_instance_is_an_orphan():
    assert decide([container("a", "running")], {"a": MISSING}) == {"a": "its task instance no longer exists"}


def test_containers_a_task_may_still_come_back_for_are_kept():
    states = {"a": "running", "b": "up_for_retry", "c": "deferred", "d": "queued", "e": None}
    assert decide([container(n, "running") for n in states], states) == {}


def test_ended_containers_go_after_the_ttl_only():
    old = container("old", "exited", finished="2026-11-26T10:00:00.123456789Z")
    new = container("new", "exited", finished="2026-11-27T11:00:00Z")
    verdicts = decide([old, new], {})
    assert list(verdicts) == ["old"] and "ttl 24.0 h" in verdicts["old"]


def test_unlabelled_containers_are_never_judged():
    foreign = container("foreign", "running", labels={"owner": "someone"})
    assert decide([foreign, container("x", "exited", labels={}, finished="2020-01-01T00:00:00Z")], {}) == {}


def test_sweep_lists_only_our_containers_within_the_label_scope():
    from unittest.mock import MagicMock

    from dood.janitor import sweep

    api = MagicMock()
    api.containers.return_value = []
    sweep(
        api, lambda labels: None, ttl=timedelta(hours=1), dry_run=True, only_labels={"team": "ml"}, log=lambda _: None
    )
    api.containers.assert_called_once_with(
        all=True, filters={"label": ["team=ml", "dood.managed=true", "dood.stack=dood"]}
    )


def test_another_stacks_containers_are_never_judged():
    """Two stacks on one host: stack A's janitor asks its own Airflow, which never heard of B's tasks."""
    theirs = container("theirs", "running")
    theirs["Config"]["Labels"]["dood.stack"] = "team-b"
    ours = container("ours", "running")
    states = {"theirs": MISSING, "ours": MISSING}
    verdicts = {
        v.name for v in plan([theirs, ours], lambda labels: states[labels["dood.task_id"]], ttl=timedelta(1), now=NOW)
    }
    assert verdicts == {"ours"}
    assert plan([theirs], lambda labels: MISSING, ttl=timedelta(1), now=NOW, stack="team-b")[0].name == "theirs"


def test_with_several_hosts_a_janitor_judges_its_own_host_s_containers_only():
    on_a, on_b, unmarked = container("on_a", "running"), container("on_b", "running"), container("unmarked", "running")
    on_a["Config"]["Labels"]["dood.host"] = "a"
    on_b["Config"]["Labels"]["dood.host"] = "b"
    everything = [on_a, on_b, unmarked]
    assert [v.name for v in plan(everything, lambda labels: MISSING, ttl=timedelta(1), now=NOW, host="b")] == ["on_b"]
    assert {v.name for v in plan(everything, lambda labels: MISSING, ttl=timedelta(1), now=NOW)} == {
        "on_a",
        "on_b",
        "unmarked",
    }  # one Docker host: as before


def test_sweep_on_a_host_filters_by_its_host_label():
    from unittest.mock import MagicMock

    from dood.janitor import sweep

    api = MagicMock()
    api.containers.return_value = []
    told = []
    sweep(api, lambda labels: None, ttl=timedelta(hours=1), dry_run=True, host="b", log=told.append)
    api.containers.assert_called_once_with(
        all=True, filters={"label": ["dood.managed=true", "dood.stack=dood", "dood.host=b"]}
    )
    assert told == ["janitor: 0 containers of stack 'dood' on host 'b', 0 to remove"]


def test_task_states_are_asked_for_the_identity_the_labels_record():
    from unittest.mock import MagicMock

    from dood.janitor import RestApiStates

    states = RestApiStates.__new__(RestApiStates)
    states.client = MagicMock()
    states.client.get.return_value.status_code = 200
    states.client.get.return_value.json.return_value = {"state": "running"}
    labels = container("train", "running")["Config"]["Labels"] | {"dood.map_index": "3", "dood.run_id": "manual__a/b"}
    assert states(labels) == "running"
    states.client.get.assert_called_once_with("/api/v2/dags/d/dagRuns/manual__a%2Fb/taskInstances/train/3")


# --- handed-off containers (wait=False, label dood.handoff) ---


def handed_off(name, waiters):
    handed = container(name, "running")
    handed["Config"]["Labels"]["dood.handoff"] = waiters
    return handed


def decide_handoff(containers, states, run="running"):
    """`states`: task id -> state, for the start tasks and their sensors alike (one run)."""
    verdicts = plan(
        containers,
        lambda labels: states.get(labels["dood.task_id"], MISSING),
        run_state=lambda labels: run,
        ttl=timedelta(hours=24),
        now=NOW,
    )
    return {v.name: v.reason for v in verdicts}


def test_a_handed_off_container_is_kept_while_its_sensor_waits_across_reschedules_and_retries():
    for sensor_state in ("none", "scheduled", "queued", "running", "up_for_reschedule", "up_for_retry", "deferred"):
        assert decide_handoff([handed_off("start", "wait")], {"start": "success", "wait": sensor_state}) == {}


def test_a_handed_off_container_goes_once_its_sensors_all_ended():
    states = {"start": "success", "wait": "failed", "wait2": "up_for_reschedule"}
    assert decide_handoff([handed_off("start", "wait,wait2")], states) == {}
    states["wait2"] = "success"
    reason = decide_handoff([handed_off("start", "wait,wait2")], states)["start"]
    assert reason == "handed off to wait, wait2, which ended (wait: failed, wait2: success)"


def test_a_handed_off_container_goes_once_its_run_ended_whatever_its_label_says():
    states = {"start": "success", "wait": "up_for_reschedule"}
    for label in ("wait", "*", "not a task id!"):
        verdicts = decide_handoff([handed_off("start", label)], states, run="failed")
        assert verdicts["start"].endswith("but its DAG run has ended (failed)"), verdicts
    gone = decide_handoff([handed_off("start", "wait")], states, run=MISSING)
    assert gone["start"] == "handed off to wait, but its DAG run no longer exists"


def test_a_container_handed_off_to_the_run_is_kept_while_the_run_runs():
    for run in ("queued", "running"):
        assert decide_handoff([handed_off("start", "*")], {"start": "success"}, run=run) == {}


def test_a_sensor_unknown_to_airflow_does_not_keep_it():
    reason = decide_handoff([handed_off("start", "renamed")], {"start": "success"})["start"]
    assert reason == "handed off to renamed, which ended (renamed: no such task)"


def test_handoff_does_not_spare_a_container_whose_task_instance_is_gone():
    assert decide_handoff([handed_off("start", "wait")], {"wait": "running"}) == {
        "start": "its task instance no longer exists"
    }


def test_a_container_not_handed_off_is_an_orphan_once_its_task_ended_as_before():
    assert decide_handoff([container("start", "running")], {"start": "success", "wait": "running"}) == {
        "start": "its task instance has ended (success)"
    }


def test_the_sdk_and_rest_lookups_carry_the_run_state():
    from unittest.mock import MagicMock

    from dood.janitor import RestApiStates, task_sdk_states

    assert callable(task_sdk_states.run_state)
    states = RestApiStates.__new__(RestApiStates)
    states.client = MagicMock()
    states.client.get.return_value.status_code = 200
    states.client.get.return_value.json.return_value = {"state": "running"}
    labels = container("train", "running")["Config"]["Labels"] | {"dood.run_id": "manual__a/b"}
    assert states.run_state(labels) == "running"
    states.client.get.assert_called_once_with("/api/v2/dags/d/dagRuns/manual__a%2Fb")
    states.client.get.return_value.status_code = 404
    assert states.run_state(labels) == MISSING


def test_sweep_signals_every_orphan_before_waiting_for_any_and_reports_every_failure():
    from unittest.mock import MagicMock

    import pytest

    from dood.janitor import sweep

    names = [f"o{i}" for i in range(6)]
    api = MagicMock()
    api.containers.return_value = [{"Id": f"id-{n}"} for n in names]

    def inspect(cid):
        found = container(cid.removeprefix("id-"), "running")
        if cid == "id-o2":
            found["Config"]["StopSignal"] = "SIGINT"  # its own stop signal, as docker stop sends it
        return found

    api.inspect_container.side_effect = inspect
    calls = []
    api.kill.side_effect = lambda cid, signal: calls.append(("kill", cid, signal))
    api.wait.side_effect = lambda cid, timeout: calls.append(("wait", cid))

    def remove(cid, force, v):
        calls.append(("remove", cid))
        if cid == "id-o4":
            raise RuntimeError("engine said no")

    api.remove_container.side_effect = remove
    told = []
    with pytest.raises(RuntimeError, match="engine said no"):
        sweep(api, lambda labels: MISSING, ttl=timedelta(hours=1), dry_run=False, workers=3, log=told.append)
    signals = [c for c in calls if c[0] == "kill"]
    first_wait = next(i for i, c in enumerate(calls) if c[0] == "wait")
    assert len(signals) == 6 and all(c[0] == "kill" for c in calls[:first_wait])  # every grace period at once
    assert ("kill", "id-o2", "SIGINT") in signals and ("kill", "id-o0", "SIGTERM") in signals
    assert sorted(c[1] for c in calls if c[0] == "remove") == sorted(f"id-{n}" for n in names)
    assert "could not remove o4: RuntimeError: engine said no" in told


def test_discard_all_gives_each_its_grace_period_then_sigkill_and_removes_it():
    from unittest.mock import MagicMock

    from docker.errors import APIError, NotFound
    from requests.exceptions import ReadTimeout

    from dood.lifecycle.teardown import discard_all

    api = MagicMock()
    timeouts = {}

    def wait(cid, timeout):
        timeouts[cid] = timeout
        if cid == "stubborn":
            raise ReadTimeout("still running")
        if cid == "gone":
            raise NotFound("gone")

    def kill(cid, signal):
        if cid == "ended" and signal == "SIGTERM":
            raise APIError("409", response=MagicMock(status_code=409))

    api.wait.side_effect = wait
    api.kill.side_effect = kill
    errors = discard_all(api, ["stubborn", "quick", "ended", "gone"], 5, workers=2)
    assert errors == {"stubborn": None, "quick": None, "ended": None, "gone": None}
    assert 4 < timeouts["stubborn"] <= 5  # the rest of its grace period, counted from its own signal
    kills = [(c.args[0], c.kwargs["signal"]) for c in api.kill.call_args_list]
    assert ("stubborn", "SIGKILL") in kills and ("quick", "SIGKILL") not in kills
    assert sorted(c.args[0] for c in api.remove_container.call_args_list) == ["ended", "quick", "stubborn"]


def test_a_rest_call_that_times_out_is_said_with_the_call_and_the_fix():
    """A busy api-server: the CLI's REST call waits --api-timeout, then says which call and what to do."""
    import socket

    from dood.exceptions import DoodError
    from dood.janitor import RestApiStates

    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        states = RestApiStates(
            f"http://127.0.0.1:{silent.getsockname()[1]}", None, None, token="t", timeout_seconds=0.3
        )
        labels = {"dood.dag_id": "d", "dood.task_id": "t", "dood.run_id": "r", "dood.try_number": "1"}
        with pytest.raises(
            DoodError, match=r"did not answer GET /api/v2/dags/d/dagRuns/r/taskInstances/t within 0.3 s"
        ):
            states(labels)
