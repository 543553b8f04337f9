"""dood's errors are plain exceptions; only the no-retry exit maps to Airflow's semantics
(in dood.lifecycle.completion)."""

from __future__ import annotations

import subprocess
import sys

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from dood.exceptions import ContainerFailed, DoodConfigError, DoodError


def test_dood_errors_are_plain_exceptions():
    assert not issubclass(DoodError, AirflowException)
    assert issubclass(DoodConfigError, ValueError)
    error = ContainerFailed(container="c", exit_code=3, oom_killed=True, log_tail=["a", "b"], error="boom")
    assert isinstance(error, DoodError) and not isinstance(error, AirflowException)
    assert "exited with code 3" in str(error) and "out of memory" in str(error) and "Docker error: boom" in str(error)


def test_the_no_retry_failure_is_a_container_failure_airflow_does_not_retry():
    from dood.lifecycle.completion import ContainerFailedNoRetry

    error = ContainerFailedNoRetry(container="c", exit_code=97, oom_killed=False, log_tail=[])
    assert isinstance(error, ContainerFailed) and isinstance(error, AirflowFailException)
    assert "exited with code 97" in str(error) and "<no output>" in str(error)


def test_importing_the_errors_does_not_import_airflow():
    code = "import sys, dood.exceptions, dood.naming, dood.config.resources; print('airflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
