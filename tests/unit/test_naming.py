from __future__ import annotations

import re

import pytest

from dood.exceptions import DoodConfigError
from dood.naming import TaskIdentity, check_user_labels

DOCKER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")


def ident(**overrides):
    values = dict(dag_id="retrain", task_id="train", run_id="scheduled__2026-11-20T00:00:00+00:00")
    values.update(overrides)
    return TaskIdentity(**values)


def test_name_is_deterministic_and_docker_valid():
    name = ident().container_name()
    assert name == ident().container_name()
    assert DOCKER_NAME.match(name)
    assert re.fullmatch(r"dood-retrain-train-t1-[a-z2-7]{26}", name)  # 128 bits of hash, base32


@pytest.mark.parametrize(
    "change",
    [{"try_number": 2}, {"run_id": "backfill__2026-11-21T00:00:00+00:00"}, {"map_index": 3}, {"task_id": "eval"}],
)
def test_each_identity_part_changes_the_name(change):
    assert ident(**change).container_name() != ident().container_name()


def test_long_and_odd_ids_are_shortened_but_stay_unique():
    long_a = ident(dag_id="ü" * 5 + "d" * 200, task_id="group.task with spaces/" + "t" * 100)
    long_b = ident(dag_id="ü" * 5 + "d" * 200 + "x", task_id="group.task with spaces/" + "t" * 100)
    for name in (long_a.container_name(), long_b.container_name()):
        assert len(name) <= 63
        assert DOCKER_NAME.match(name)
    assert long_a.container_name() != long_b.container_name()


def test_labels_identify_the_try():
    labels = ident(map_index=2, try_number=3).labels()
    assert labels == {
        "dood.managed": "true",
        "dood.stack": "dood",
        "dood.dag_id": "retrain",
        "dood.task_id": "train",
        "dood.run_id": "scheduled__2026-11-20T00:00:00+00:00",
        "dood.map_index": "2",
        "dood.try_number": "3",
    }
    assert "dood.try_number" not in ident().task_labels()
    assert ident().task_labels(task_id="start")["dood.task_id"] == "start"


def test_two_stacks_with_the_same_dag_and_run_ids_get_two_names_and_labels():
    a, b = ident(), ident(stack="team-b")
    assert a.container_name() != b.container_name()
    assert a.labels()["dood.stack"] == "dood" and b.labels()["dood.stack"] == "team-b"


def test_user_labels_cannot_forge_ownership():
    with pytest.raises(DoodConfigError, match=r"dood\.managed"):
        check_user_labels({"dood.managed": "true", "team": "ml"})
    assert check_user_labels({"team": "ml"}) == {"team": "ml"}


def test_the_host_is_part_of_the_identity_and_its_labels():
    on_b = ident(host="gpu-b", try_number=2)
    assert on_b.labels()["dood.host"] == "gpu-b"
    assert on_b.task_labels()["dood.host"] == "gpu-b"  # reattach and the sensor look on their host only
    assert "dood.host" not in ident().labels()  # one Docker host: labels as before
    assert on_b.container_name() == ident(try_number=2).container_name()  # one engine per host: names need not differ


@pytest.mark.parametrize(
    "identity",
    [ident(), ident(map_index=4, try_number=3, stack="team-b", host="gpu-b")],
)
def test_from_labels_reads_back_what_labels_wrote(identity):
    labels = {**identity.labels(), "com.example.other": "x"}
    assert TaskIdentity.from_labels(labels) == identity


def test_from_labels_of_a_container_that_is_no_task_s():
    with pytest.raises(KeyError):
        TaskIdentity.from_labels({"dood.managed": "true", "dood.stack": "dood"})
    odd = TaskIdentity.from_labels({"dood.dag_id": "d", "dood.task_id": "t", "dood.run_id": "r", "dood.map_index": "x"})
    assert (odd.map_index, odd.try_number, odd.stack, odd.host) == (-1, 1, "dood", None)


@pytest.mark.parametrize(
    ("dag_id", "task_id", "readable"),
    [
        ("dood_it_sensor_reschedule", "start", "dood_it_sensor_resched-start"),  # the task stays whole
        ("d" * 100, "t" * 100, "d" * 13 + "-" + "t" * 14),  # both long: the task keeps half the room
        ("dag", "group.task_" + "t" * 80, "dag-group.task_" + "t" * 13),  # a short dag leaves the rest to the task
        ("___", "...", "x-x"),
    ],
)
def test_the_readable_part_is_cut_to_fit_and_the_task_stays_readable(dag_id, task_id, readable):
    name = ident(dag_id=dag_id, task_id=task_id).container_name()
    assert re.fullmatch(rf"dood-{re.escape(readable)}-t1-[a-z2-7]{{26}}", name), name
    assert len(name) <= 63 and DOCKER_NAME.match(name)


@pytest.mark.parametrize(("map_index", "try_number"), [(-1, 1), (0, 1), (1023, 7), (99_999, 999), (10**30, 10**20)])
def test_names_fit_docker_and_dood_proxy_whatever_the_numbers(map_index, try_number):
    from dood.proxy.directory_api import _NAME  # the run directory is named after the container

    name = ident(dag_id="a" * 80, task_id="b" * 80, map_index=map_index, try_number=try_number).container_name()
    assert DOCKER_NAME.match(name) and _NAME.fullmatch(name), name
    if map_index < 10**6:
        assert len(name) <= 63


def test_identities_that_read_alike_get_names_told_apart_by_the_hash():
    alike = [ident(dag_id="a/b"), ident(dag_id="a:b"), ident(dag_id="a b"), ident(dag_id="a-b")]
    names = {identity.container_name() for identity in alike}
    assert len(names) == 4
    assert {name[: -len("-t1-") - 26] for name in names} == {"dood-a-b-train"}
