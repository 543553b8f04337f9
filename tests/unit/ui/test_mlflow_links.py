"""Links to MLflow's UI: ids from the XCom `mlflow` checked and quoted, http(s) bases only, none without
`tracking.mlflow.ui_url`; the key is the operator's."""

from __future__ import annotations

import pytest

from dood.ui.mlflow_links import XCOM_KEY, MlflowLinks, MlflowRun

RUN, PARENT = "a" * 32, "b" * 32
PUSHED = {"experiment_id": "7", "experiment_name": "ml", "run_id": RUN, "parent_run_id": PARENT}


def test_the_key_is_the_one_the_operator_pushes():
    from dood.operators import tracking

    assert tracking.XCOM_KEY == XCOM_KEY


def test_what_the_operator_pushes_is_read():
    assert MlflowRun.from_xcom(PUSHED) == MlflowRun("7", RUN, PARENT, "ml")
    assert MlflowRun.from_xcom({**PUSHED, "parent_run_id": None}) == MlflowRun("7", RUN, None, "ml")


@pytest.mark.parametrize(
    "value",
    [
        None,
        "7/" + RUN,
        [],
        {**PUSHED, "run_id": None},
        {**PUSHED, "run_id": 'x" onclick="alert(1)'},
        {**PUSHED, "run_id": "../../admin"},
        {**PUSHED, "experiment_id": "javascript:alert(1)"},
        {**PUSHED, "experiment_id": 7},
        {**PUSHED, "run_id": "a" * 65},
    ],
)
def test_anything_else_is_no_run(value):
    assert MlflowRun.from_xcom(value) is None


def test_a_bad_parent_id_is_dropped_not_linked():
    assert MlflowRun.from_xcom({**PUSHED, "parent_run_id": "<x>"}).parent_run_id is None


def test_links_under_the_ui_address():
    links = MlflowLinks(MlflowRun("7", RUN, PARENT, "ml"), "https://mlflow.example.com/tools/mlflow")
    assert links.experiment_url == "https://mlflow.example.com/tools/mlflow/#/experiments/7"
    assert links.run_url == f"https://mlflow.example.com/tools/mlflow/#/experiments/7/runs/{RUN}"
    assert links.parent_url == f"https://mlflow.example.com/tools/mlflow/#/experiments/7/runs/{PARENT}"


@pytest.mark.parametrize("base", [None, "", "javascript:alert(1)", "data:text/html,x", "//evil.example"])
def test_no_link_without_an_http_address(base):
    links = MlflowLinks(MlflowRun("7", RUN, PARENT), base)
    assert links.run_url is None and links.parent_url is None and links.experiment_url is None


def test_no_parent_link_without_a_parent():
    assert MlflowLinks(MlflowRun("7", RUN, None), "http://127.0.0.1:5000").parent_url is None
