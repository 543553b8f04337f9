"""Bad operator arguments fail when the DAG is defined, naming the field, before any container exists."""

from __future__ import annotations

import pytest

from dood import DoodContainerOperator
from dood.exceptions import DoodConfigError


def make(**kwargs):
    return DoodContainerOperator(task_id="t", image=kwargs.pop("image", "img"), **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"resources": {"memory": "lots"}}, "resources.memory"),
        ({"resources": {"cpus": -1}}, "resources.cpus"),
        ({"resources": {"gpu": 1}}, "resources.gpu"),
        ({"pull_policy": "sometimes"}, "pull_policy"),
        ({"auto_remove": "yes"}, "auto_remove"),
        ({"skip_on_exit_code": 0}, "skip_on_exit_code"),
        ({"skip_on_exit_code": [99, "x"]}, "skip_on_exit_code"),
        ({"labels": {"dood.managed": "false"}}, "labels"),
        ({"stop_grace_period": -5}, "stop_grace_period"),
        ({"image": ""}, "image"),
    ],
)
def test_bad_argument_names_the_field(kwargs, field):
    with pytest.raises(DoodConfigError, match=field.replace(".", r"\.")):
        make(**kwargs)


def test_private_environment_is_never_templated():
    op = make(environment={"A": "{{ ds }}"}, private_environment={"TOKEN": "s3cret"})
    assert "environment" in op.template_fields
    assert "private_environment" not in op.template_fields


def test_defaults_are_accepted():
    op = make(skip_on_exit_code=[99], resources={"cpus": 1, "memory": "256m"})
    assert op.skip_on_exit_code == frozenset({99})
    assert op.container_resources.memory == 256 * 1024**2
