"""How a container's end becomes the task's end (dood.lifecycle.completion): success with its result, skip, failure,
the final failure Airflow does not retry, the handle any process can find a container by, and the config a
resume finishes with when its own cannot be read."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from dood.config.model import parse_config
from dood.exceptions import ContainerFailed, DoodConfigError
from dood.lifecycle.completion import (
    ContainerFailedNoRetry,
    ContainerHandle,
    carried_config,
    conclude,
    resume_carry,
    resume_config,
    task_deadline,
)
from dood.lifecycle.outcome import RESUME_KEY, Outcome
from dood.lifecycle.results import NO_RETRY_EXIT_CODE, RESULT_FILE_NAME


@pytest.fixture
def handle(tmp_path) -> ContainerHandle:
    return ContainerHandle.of("c" * 64, "dood-dag-task-t1-abc", str(tmp_path))


def _conclude(handle, exit_code, *, skip=(), oom=False, error="", tail=("a", "b")):
    outcome = Outcome(exit_code=exit_code, oom_killed=oom, error=error)
    return conclude(handle, outcome, list(tail), skip_on_exit_code=skip, max_result_bytes=1000)


def test_success_returns_the_result_the_container_wrote(handle):
    assert _conclude(handle, 0) is None  # nothing written: no result
    run_dir = handle.run_dir
    os.makedirs(run_dir)
    with open(f"{run_dir}/{RESULT_FILE_NAME}", "w") as out:
        json.dump({"accuracy": 0.9}, out)
    assert _conclude(handle, 0) == {"accuracy": 0.9}
    assert _conclude(handle, 0, skip=(0,)) == {"accuracy": 0.9}  # exit 0 is never a skip


def test_a_listed_exit_code_skips(handle):
    with pytest.raises(AirflowSkipException, match="exited with code 3 .skip_on_exit_code."):
        _conclude(handle, 3, skip=(3, 4))


def test_any_other_exit_fails_with_the_context_a_reader_needs(handle):
    with pytest.raises(ContainerFailed) as caught:
        _conclude(handle, 2, skip=(3,), oom=True, error="boom", tail=("line 1", "line 2"))
    error = caught.value
    assert not isinstance(error, (ContainerFailedNoRetry, AirflowFailException))  # Airflow may retry it
    assert (error.container, error.exit_code, error.oom_killed, error.log_tail) == (
        handle.container_name,
        2,
        True,
        ["line 1", "line 2"],
    )
    assert "out of memory" in str(error) and "Docker error: boom" in str(error)


def test_the_no_retry_exit_code_fails_the_task_for_good(handle):
    with pytest.raises(ContainerFailedNoRetry) as caught:
        _conclude(handle, NO_RETRY_EXIT_CODE)
    assert isinstance(caught.value, AirflowFailException) and caught.value.exit_code == NO_RETRY_EXIT_CODE


def test_a_skip_code_wins_over_the_no_retry_code(handle):
    with pytest.raises(AirflowSkipException):
        _conclude(handle, NO_RETRY_EXIT_CODE, skip=(NO_RETRY_EXIT_CODE,))


def test_the_handle_survives_xcom_and_derives_its_run_dir(tmp_path):
    handle = ContainerHandle.of("c" * 64, "dood-x", "/runs")
    assert handle.run_dir == "/runs/dood-x"
    assert ContainerHandle.from_xcom(json.loads(json.dumps(handle.to_xcom()))) == handle
    assert ContainerHandle.from_xcom({**handle.to_xcom(), "extra": "ignored"}) == handle


class _Api:
    def __init__(self) -> None:
        self.inspected: list[str] = []

    def inspect_container(self, container_id: str) -> dict:
        self.inspected.append(container_id)
        return {"Id": container_id, "Name": "/dood-from-engine"}


def test_a_resumed_handle_is_the_one_given_to_defer_else_rebuilt_from_the_event():
    given = ContainerHandle.of("c" * 64, "dood-x", "/runs")
    api = _Api()
    assert ContainerHandle.resumed(given.to_xcom(), {"container_id": "other"}, api, "/elsewhere") == given
    assert api.inspected == []  # nothing asked of Docker when the handle came back
    rebuilt = ContainerHandle.resumed(None, {"container_id": "d" * 64}, api, "/runs")
    assert rebuilt == ContainerHandle("d" * 64, "dood-from-engine", "/runs/dood-from-engine")
    assert api.inspected == ["d" * 64]


def test_the_handle_records_its_host_when_there_are_several():
    on_b = ContainerHandle.of("c" * 64, "dood-x", "/runs", host="gpu-b")
    assert on_b.to_xcom()["host"] == "gpu-b"
    assert ContainerHandle.from_xcom(json.loads(json.dumps(on_b.to_xcom()))) == on_b
    assert "host" not in ContainerHandle.of("c" * 64, "dood-x", "/runs").to_xcom()  # one host: as it always was
    rebuilt = ContainerHandle.resumed(None, {"container_id": "d" * 64}, _Api(), "/runs", host="gpu-b")
    assert rebuilt.host == "gpu-b"


def test_the_deadline_counts_from_the_task_start_and_never_from_1970():
    started = datetime(2026, 1, 1, tzinfo=timezone.utc)
    context = {"ti": SimpleNamespace(start_date=started)}
    assert task_deadline(context, None) is None
    assert task_deadline(context, timedelta(minutes=1)) == started.timestamp() + 60
    assert task_deadline(context, 90) == started.timestamp() + 90  # a sensor's timeout, in seconds
    unstarted = task_deadline({"ti": SimpleNamespace(start_date=None)}, 90)
    assert time.time() + 80 < unstarted <= time.time() + 90


# --- a resume whose dood config cannot be read: what the trigger's event carries ---------------------------

BROKEN = DoodConfigError("Invalid dood config /etc/dood.yaml: not valid YAML: mapping values are not allowed here")


def _carried_event(handle: ContainerHandle, **docker) -> dict:
    config = parse_config({"max_result_bytes": 4096, "defaults": {"auto_remove": "on_success"}})
    carry = resume_carry(handle, config, auto_remove=None, stop_grace_seconds=7, stack="team-a")
    endpoint = {"url": "tcp://proxy:2375", "api_version": "1.41", "unreachable_timeout_seconds": 45.5, **docker}
    return {"status": "success", "exit_code": 0, RESUME_KEY: {**carry, "docker": endpoint}}


def test_the_carried_config_finishes_as_the_one_the_task_deferred_with(handle):
    config = carried_config(_carried_event(handle, tls_ca_cert="/certs/ca.pem"), None, BROKEN)
    assert (config.docker.url, config.docker.api_version, config.docker.tls_ca_cert) == (
        "tcp://proxy:2375",
        "1.41",
        "/certs/ca.pem",
    )
    assert config.docker.unreachable_timeout_seconds == 46  # whole seconds, never less than the trigger's
    assert (config.max_result_bytes, config.defaults.auto_remove, config.stack) == (4096, "on_success", "team-a")
    assert config.defaults.stop_grace_period_seconds == 7
    assert ContainerHandle.of("x", handle.container_name, config.runs_root).run_dir == handle.run_dir


def test_the_task_s_own_auto_remove_wins_over_the_config_s(handle):
    config = parse_config({"defaults": {"auto_remove": "always"}})
    assert resume_carry(handle, config, auto_remove="never", stop_grace_seconds=1, stack="s")["auto_remove"] == "never"


def test_a_resume_reads_its_config_when_it_can_and_falls_back_with_a_warning_when_not(handle):
    warnings: list[str] = []
    good = parse_config({})
    event = _carried_event(handle)
    assert resume_config(lambda: good, event, handle.to_xcom(), warnings.append) == (good, False)
    assert warnings == []

    def broken():
        raise BROKEN

    def warn(message, *args):
        warnings.append(message % args)

    config, carried = resume_config(broken, event, None, warn)
    assert carried and config.docker.url == "tcp://proxy:2375"
    (warning,) = warnings
    assert "The dood config cannot be read (Invalid dood config /etc/dood.yaml: not valid YAML" in warning
    assert (
        f"Finishing container {handle.container_name} with what its trigger carried: Docker at tcp://proxy:2375"
        in warning
    )
    assert f"run directory {handle.run_dir}, max_result_bytes 4096, auto_remove on_success" in warning


def test_an_event_that_carries_nothing_fails_saying_what_is_missing_and_the_fix(handle):
    event = {"status": "success", "exit_code": 0, "container_id": "c" * 64, "message": "exited with code 0."}
    with pytest.raises(DoodConfigError) as caught:
        carried_config(event, handle.to_xcom(), BROKEN)
    message = str(caught.value)
    assert message.startswith("Invalid dood config /etc/dood.yaml: not valid YAML")
    assert f"The resume of container {handle.container_name} cannot go on without it" in message
    assert "does not carry the Docker endpoint, max_result_bytes, auto_remove" in message  # the handle was given
    assert "Fix the config, then clear the task" in message


def test_the_handle_a_runner_dropped_is_taken_from_the_event(handle):
    event = _carried_event(handle)
    assert ContainerHandle.resumed(None, event, api=None, runs_root="/elsewhere") == handle
