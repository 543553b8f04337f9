"""The detached stop-then-remove (dood.lifecycle.teardown), and "gone before its outcome was read"
(dood.lifecycle.gone)."""

from __future__ import annotations

import subprocess
import sys

from dood.engine.target import DockerTarget
from dood.lifecycle.gone import ContainerGone, gone_message
from dood.lifecycle.teardown import detach


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
    code = "import sys, dood.lifecycle.teardown; print('airflow' in sys.modules)"
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


def test_a_stop_is_noted_in_the_run_directory_never_through_a_link_the_step_placed(tmp_path):
    import json
    import os
    from datetime import datetime, timezone

    from dood.lifecycle.teardown import STOPPING_FILE, note_stopping
    from dood.ui.stopping import read_note, stopping

    runs = tmp_path / "runs"
    (runs / "dood-c").mkdir(parents=True)
    precious = tmp_path / "precious"
    precious.write_text("keep")
    os.symlink(precious, runs / "dood-c" / STOPPING_FILE)  # the step's own run directory: it can do this
    note_stopping(str(runs), "dood-c", "the janitor: its task instance has ended (failed)", 5)
    assert precious.read_text() == "keep"
    assert not (runs / "dood-c" / STOPPING_FILE).is_symlink()
    note = json.loads((runs / "dood-c" / STOPPING_FILE).read_text())
    assert note["who"].startswith("the janitor") and note["grace_seconds"] == 5
    assert [p.name for p in (runs / "dood-c").iterdir()] == [STOPPING_FILE]  # no temporary left
    note_stopping(str(runs), "../escape", "x", 5)  # not a container name: nothing written
    note_stopping(str(runs), "dood-absent", "x", 5)  # no run directory here: nothing, no error
    assert not (runs / "dood-absent").exists()

    entry = {"Id": "c1", "Names": ["/dood-c"], "State": "running", "Created": 1}
    now = datetime.now(timezone.utc)
    found = stopping(str(runs), [entry], now)["c1"]
    assert found.who.startswith("the janitor") and (found.grace_ends - found.asked_at).total_seconds() == 5
    assert stopping(str(runs), [{**entry, "State": "exited"}], now) == {}
    assert stopping(str(runs), [{**entry, "Created": int(now.timestamp()) + 60}], now) == {}  # an older note
    # the page never follows a link either, nor reads what is not a small JSON note
    (runs / "dood-c" / STOPPING_FILE).unlink()
    os.symlink(precious, runs / "dood-c" / STOPPING_FILE)
    assert read_note(str(runs / "dood-c")) is None
    (runs / "dood-c" / STOPPING_FILE).unlink()
    (runs / "dood-c" / STOPPING_FILE).write_text('{"who": 1, "asked_at": "x", "grace_seconds": 5}')
    assert read_note(str(runs / "dood-c")) is None
