"""The janitor's decisions (pure): what is an orphan, what is kept, what is never ours."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

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
