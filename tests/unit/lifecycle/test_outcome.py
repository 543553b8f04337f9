"""The trigger's event (dood.lifecycle.outcome): what the trigger encodes is what the operator and the sensor decode."""

from __future__ import annotations

import pytest

from dood.exceptions import DoodError
from dood.lifecycle.completion import resume
from dood.lifecycle.gone import ContainerGone
from dood.lifecycle.outcome import ENDED, NOT_RUNNING, RUNNING, STILL_GOING, Outcome, gone_event, wait_event

CID = "f" * 64


@pytest.mark.parametrize(
    "outcome",
    [
        Outcome(0, finished_at=1.5),
        Outcome(3, error="boom", finished_at=2.0),
        Outcome(137, oom_killed=True),
        Outcome(143, finished_at=3.0, killed_by_daemon="killed by the Docker daemon's shutdown"),
    ],
)
def test_an_outcome_survives_the_event(outcome):
    event = outcome.to_event(CID)
    assert event["status"] == ("success" if outcome.exit_code == 0 else "failed")
    assert event["container_id"] == CID
    assert Outcome.from_event(event) == outcome
    assert resume(event, "dood-x") == outcome


def test_the_message_says_oom_and_the_daemon():
    assert "out of memory" in Outcome(137, oom_killed=True).to_event(CID)["message"]
    event = Outcome(143, killed_by_daemon="the daemon stopped").to_event(CID)
    assert event["message"] == f"Container {CID[:12]} exited with code 143, the daemon stopped."


def test_a_gone_event_resumes_as_container_gone_with_its_exit_code():
    with pytest.raises(ContainerGone, match="exited with code 137"):
        resume(gone_event(CID, exit_code=137), "dood-x")
    with pytest.raises(ContainerGone, match="exit code is unknown"):
        resume(gone_event(CID), "dood-x")


def test_an_error_event_resumes_as_a_dood_error_with_its_message():
    with pytest.raises(DoodError, match="Waiting for container dood-x failed: Docker stayed unreachable"):
        resume(wait_event("error", CID, "Docker stayed unreachable"), "dood-x")


def test_states_partition_dockers_states():
    assert set(RUNNING) < set(STILL_GOING)
    assert not set(STILL_GOING) & set(ENDED)
    assert set(NOT_RUNNING) == {"created", *ENDED}
