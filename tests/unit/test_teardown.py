"""The detached stop-then-remove (dood.teardown) and "gone before its outcome was read" (dood.gone)."""

from __future__ import annotations

import subprocess
import sys

from dood.gone import ContainerGone, gone_message
from dood.teardown import DockerTarget, detach


def test_target_round_trips_through_the_command_line():
    target = DockerTarget("tcp://docker:2376", "1.41", "/ca.pem", "/cert.pem", "/key.pem")
    args = target.arguments()
    assert args[:4] == ["--docker-url", "tcp://docker:2376", "--api-version", "1.41"]
    assert ["--tls-client-key", "/key.pem"] == args[-2:]
    assert DockerTarget("unix:///var/run/docker.sock").arguments() == [
        "--docker-url",
        "unix:///var/run/docker.sock",
        "--api-version",
        "auto",
    ]


def test_teardown_process_runs_in_its_own_session_and_reports_failure(tmp_path):
    # No daemon answers there: the process fails, and says why in its log, which the report carries.
    ending = detach(DockerTarget(f"unix://{tmp_path}/absent.sock"), "c0ffee", 0)
    assert subprocess.run(
        ["ps", "-o", "sid=", "-p", str(ending.pid)], capture_output=True, text=True
    ).stdout.strip() in (
        str(ending.pid),
        "",  # already gone
    )
    report = ending.wait(timeout=60)
    assert report.startswith("Ending container c0ffee failed (exit 1)")
    assert "absent.sock" in report or "Connection" in report or "No such file" in report


def test_teardown_module_does_not_import_airflow():
    code = "import sys, dood.teardown; print('airflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_gone_says_what_happened_with_the_exit_code_when_known():
    assert (
        gone_message("dood-x", 0)
        == "Container dood-x was removed before its outcome could be read (it exited with code 0)."
    )
    assert "exit code is unknown" in gone_message("dood-x", None)
    event = {"status": "error", "gone": True, "exit_code": 137}
    gone = ContainerGone.from_event("dood-x", event)
    assert gone is not None and gone.exit_code == 137
    assert ContainerGone.from_event("dood-x", {"status": "error", "message": "unreachable"}) is None
