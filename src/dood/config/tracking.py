"""The `tracking:` section of the dood config: where the steps' MLflow runs go (off unless it is given).

Only the model lives here (no MLflow import): `dood.config.model` validates it like every other section, and
`dood.lifecycle.mlflow_runs` (the Airflow side, which imports MLflow's client lazily) reads it.
"""

from __future__ import annotations

import re
import string
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["NAME_PLACEHOLDERS", "MlflowTracking", "Tracking"]

#: What `experiment_name` and `registered_model_name` may use, and what each becomes.
NAME_PLACEHOLDERS = {
    "pipeline": "the pipeline's name (a pipeline step); the DAG id for any other task",
    "dag_id": "the DAG id",
    "stack": "the deployment's stack (`stack`)",
}
#: Environment variables of MLflow's client that carry a secret: handed to steps privately when set.
DEFAULT_CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
_SCHEMES = ("http", "https")
#: What a UI base address may hold (allow-list): unreserved characters, percent-encodings, and the scheme, port,
#: path and IPv6 delimiters; no userinfo, query or fragment is allowed anyway. It is written into pages as a link.
_UI_URL_CHARS = re.compile(r"[A-Za-z0-9._~%:/\[\]-]+")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_uri(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in _SCHEMES:
        raise ValueError(
            f"must be an http:// or https:// URI of a tracking server, got {value!r} (a local file store is not "
            "supported: MLflow 3 keeps it in maintenance mode; run `mlflow server --backend-store-uri sqlite:///...`)"
        )
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "must not hold credentials (they would show in the task's rendered environment): give them to the "
            "Airflow workers as MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN); "
            "dood hands them to each step privately (`credentials_env`)"
        )
    if not parts.netloc:
        raise ValueError(f"names no server, got {value!r}")
    return value.rstrip("/")


def _check_ui_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in _SCHEMES or not parts.netloc:
        raise ValueError(
            f"must be the http:// or https:// address of MLflow's UI as a browser reaches it (the Airflow UI links "
            f"each run to it), e.g. http://127.0.0.1:5000, got {value!r}"
        )
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not hold credentials: it is written into the Airflow UI's pages as a link")
    if parts.query or parts.fragment:
        raise ValueError(f"must be a base address without ?query or #fragment (dood adds the run's), got {value!r}")
    if not _UI_URL_CHARS.fullmatch(value):
        raise ValueError(
            "must be a URL without spaces, control characters or other characters than letters, digits and "
            f"- . _ ~ % : / [ ] (percent-encode the rest), got {value!r}"
        )
    return value.rstrip("/")


def _check_template(value: str) -> str:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid name template ({exc}); write a literal brace as {{{{") from None
    unknown = sorted(names - set(NAME_PLACEHOLDERS))
    if unknown:
        raise ValueError(f"{value!r} uses unknown placeholders {unknown}; known: {sorted(NAME_PLACEHOLDERS)}")
    return value


class MlflowTracking(_Strict):
    """An MLflow tracking server (or file store) every step's run goes to: one parent run per DAG run, one
    nested run per task instance (docs/lifecycle.md)."""

    tracking_uri: str = Field(
        description=(
            "The tracking server as the steps' containers reach it (on their Docker network): handed to each "
            "step as $MLFLOW_TRACKING_URI (http:// or https://). Never with credentials in it (see "
            "`credentials_env`)."
        ),
        examples=["http://mlflow:5000", "https://mlflow.example.com"],
    )
    airflow_tracking_uri: str | None = Field(
        default=None,
        description=(
            "The same server as the Airflow workers reach it (they create the parent and step runs), when that "
            "differs, e.g. http://127.0.0.1:5000 for Airflow on the host. None: `tracking_uri`."
        ),
        examples=["http://127.0.0.1:5000"],
    )
    ui_url: str | None = Field(
        default=None,
        description=(
            "MLflow's UI as the users' browsers reach it (http:// or https://, no credentials): the Airflow UI's "
            "Container tab links each step to its MLflow run and the Model metrics tab each DAG run to its parent "
            "run. None: no links."
        ),
        examples=["http://127.0.0.1:5000", "https://mlflow.example.com"],
    )
    experiment_name: str = Field(
        default="{pipeline}",
        min_length=1,
        description=(
            "The experiment of a DAG's runs (created when missing); placeholders: "
            + "; ".join(f"{{{k}}}: {v}" for k, v in NAME_PLACEHOLDERS.items())
            + "."
        ),
        examples=["{pipeline}", "{stack}/{pipeline}"],
    )
    register_models: bool = Field(
        default=True,
        description=(
            "Whether promote registers the model it crowns as a version of `registered_model_name` and moves "
            "its `champion` alias there (the previous champion keeps the alias `previous`). Handed to the steps "
            "as $DOOD_MLFLOW_REGISTER_MODELS."
        ),
    )
    registered_model_name: str = Field(
        default="{pipeline}",
        min_length=1,
        description="The registered model a pipeline's champions are versions of ($DOOD_MLFLOW_MODEL_NAME); "
        "same placeholders as `experiment_name`.",
        examples=["{pipeline}", "{stack}-{pipeline}"],
    )
    credentials_env: tuple[str, ...] = Field(
        default=DEFAULT_CREDENTIALS,
        description=(
            "Environment variables of the Airflow worker handed to every step through `private_environment` "
            "(never rendered nor logged) when they are set there: MLflow's client reads its credentials "
            "from them, on the Airflow side too."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _redacted(cls, data: object) -> object:
        """A password in a URI never reaches the error message (which quotes the value) nor a log."""
        if not isinstance(data, dict):
            return data
        redacted = dict(data)
        for key in ("tracking_uri", "airflow_tracking_uri", "ui_url"):
            value = data.get(key)
            if isinstance(value, str) and "@" in value:
                parts = urlsplit(value)
                redacted[key] = parts._replace(netloc=f"***@{parts.netloc.rpartition('@')[2]}").geturl()
        return redacted

    @field_validator("tracking_uri", "airflow_tracking_uri")
    @classmethod
    def _uris(cls, value: str | None) -> str | None:
        return None if value is None else _check_uri(value)

    @field_validator("ui_url")
    @classmethod
    def _ui_url(cls, value: str | None) -> str | None:
        return None if value is None else _check_ui_url(value)

    @field_validator("experiment_name", "registered_model_name")
    @classmethod
    def _templates(cls, value: str) -> str:
        return _check_template(value)

    @field_validator("credentials_env")
    @classmethod
    def _env_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [name for name in value if not _ENV_NAME.fullmatch(name)]
        if bad:
            raise ValueError(f"{bad} are no environment variable names (capitals, digits, underscores)")
        return value

    @property
    def airflow_uri(self) -> str:
        """The server as this Airflow process reaches it."""
        return self.airflow_tracking_uri or self.tracking_uri

    def names(self, *, pipeline: str | None, dag_id: str, stack: str) -> tuple[str, str]:
        """(experiment name, registered model name) of a DAG's runs."""
        values = {"pipeline": pipeline or dag_id, "dag_id": dag_id, "stack": stack}
        return self.experiment_name.format(**values), self.registered_model_name.format(**values)


class Tracking(_Strict):
    """Experiment tracking of the steps' runs; none configured: no step is tracked (the default)."""

    mlflow: MlflowTracking | None = Field(
        default=None,
        description=(
            "MLflow: each step gets $MLFLOW_TRACKING_URI, $MLFLOW_EXPERIMENT_NAME, $MLFLOW_RUN_ID (its own run, "
            "nested under the DAG run's, $MLFLOW_PARENT_RUN_ID). Needs `pip install 'dood-airflow[mlflow]'` "
            "on the Airflow workers."
        ),
    )
