"""tracking.mlflow.ui_url: MLflow's UI as the browser reaches it, http(s) only, no credentials, no query."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from dood.config.tracking import MlflowTracking


def _settings(**kwargs) -> MlflowTracking:
    return MlflowTracking(tracking_uri="http://mlflow:5000", **kwargs)


def test_ui_url_is_optional_and_kept_without_a_trailing_slash():
    assert _settings().ui_url is None
    assert _settings(ui_url="http://127.0.0.1:5000/").ui_url == "http://127.0.0.1:5000"
    assert _settings(ui_url="https://tools.example.com/mlflow").ui_url == "https://tools.example.com/mlflow"


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("javascript:alert(1)", "http:// or https:// address of MLflow's UI"),
        ("ftp://mlflow", "http:// or https:// address of MLflow's UI"),
        ("127.0.0.1:5000", "http:// or https:// address of MLflow's UI"),
        ("http://", "http:// or https:// address of MLflow's UI"),
        ("http://x/?next=/evil", "without ?query or #fragment"),
        ("http://x/#/experiments/1", "without ?query or #fragment"),
        ('http://x/"onmouseover=alert(1)', "without spaces, control characters"),
        ("http://x/a b", "without spaces, control characters"),
    ],
)
def test_a_bad_ui_url_is_refused_naming_the_field_and_the_fix(value, said):
    with pytest.raises(ValidationError) as caught:
        _settings(ui_url=value)
    text = str(caught.value)
    assert "ui_url" in text and said in text, text


def test_credentials_in_ui_url_are_refused_and_never_quoted():
    with pytest.raises(ValidationError) as caught:
        _settings(ui_url="http://admin:hunter2@mlflow:5000")
    text = str(caught.value)
    assert "must not hold credentials" in text and "hunter2" not in text, text
