"""The maintenance DAG on the real engine: only our orphans go; what a task may still need, and every
container without our label, stays."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.integration.conftest import TEST_IMAGE, run_id_for, xcom_value

# Every container of this test carries SCOPE, and the sweeps are limited to it: a janitor test must not
# remove other dood containers of the same engine (a developer's, a parallel test's).
SCOPE = {"dood-test": "janitor"}
OURS = {"dood.managed": "true", "dood.stack": "dood", "dood.map_index": "-1", "dood.try_number": "1", **SCOPE}


@pytest.fixture
def containers(docker_api):
    created = []

    def make(name, labels, command=("sleep", "300")):
        container = docker_api.create_container(TEST_IMAGE, list(command), name=name, labels=labels)
        docker_api.start(container["Id"])
        created.append(container["Id"])
        return container["Id"]

    yield make
    for container_id in created:
        try:
            docker_api.remove_container(container_id, force=True)
        except Exception:  # noqa: BLE001 - removed by the janitor, as intended
            pass


def exists(docker_api, container_id):
    return bool(docker_api.containers(all=True, filters={"id": container_id}))


def test_janitor_removes_only_our_orphans(docker_api, dag_run, next_date, containers, ours):
    sweep_date = next_date + timedelta(seconds=1)
    orphan = containers(
        "dood-it-janitor-orphan", {**OURS, "dood.dag_id": "dood_it_ghost", "dood.run_id": "gone", "dood.task_id": "t"}
    )
    in_use = containers(
        "dood-it-janitor-in-use",  # labelled as the janitor's own task: running while it runs
        {**OURS, "dood.dag_id": "dood_janitor", "dood.run_id": run_id_for(sweep_date), "dood.task_id": "sweep_orphans"},
    )
    foreign = containers("dood-it-janitor-foreign", {"owner": "someone-else", **SCOPE})
    other_stack = containers(  # another stack's training: its Airflow, not ours, may judge it
        "dood-it-janitor-other-stack",
        {**OURS, "dood.stack": "team-b", "dood.dag_id": "dood_it_ghost", "dood.run_id": "gone", "dood.task_id": "t"},
    )
    ended = containers(
        "dood-it-janitor-ended",
        {**OURS, "dood.dag_id": "dood_it_ghost", "dood.run_id": "old", "dood.task_id": "t"},
        ("true",),
    )
    docker_api.wait(ended)

    dry = dag_run("dood_janitor", next_date, {"dry_run": True, "ttl_hours": 0, "only_labels": SCOPE})
    assert dry.state == "success"
    planned = xcom_value(dry, "sweep_orphans")["return_value"]
    assert {line.split(":")[0] for line in planned} >= {"dood-it-janitor-orphan", "dood-it-janitor-ended"}
    assert not any(line.startswith(("dood-it-janitor-foreign", "dood-it-janitor-other-stack")) for line in planned)
    assert all(exists(docker_api, c) for c in (orphan, in_use, foreign, ended))  # dry run touched nothing

    real = dag_run("dood_janitor", sweep_date, {"dry_run": False, "ttl_hours": 0, "only_labels": SCOPE})
    assert real.state == "success"
    assert not exists(docker_api, orphan) and not exists(docker_api, ended)
    assert exists(docker_api, in_use)  # its task instance (the sweep itself) was running
    assert exists(docker_api, foreign) and exists(docker_api, other_stack)
