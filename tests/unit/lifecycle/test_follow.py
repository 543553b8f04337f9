"""dood.lifecycle.follow without an engine (a stand-in launcher): the blocking wait across a daemon restart."""

from __future__ import annotations

import time

import requests

from dood.engine.reconnect import Reconnector
from dood.lifecycle.follow import follow_to_end
from dood.lifecycle.outcome import Outcome


class Launcher:
    """Records the calls; `waits` are what successive wait() calls return or raise."""

    def __init__(self, waits, outcome_after_outage=None):
        self.waits = list(waits)
        self.calls = []
        self.outcome_after_outage = outcome_after_outage
        self.api = self

    def forward_output(self, stream, emit, **kwargs):
        self.calls.append(("output",))
        for line in stream:
            emit(line)

    def forward_logs(self, container_id, emit, *, follow, since, **kwargs):
        self.calls.append(("logs", follow, since))
        emit("after the restart")

    def wait(self, container_id, name=None):
        result = self.waits.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    def outcome(self, container_id):
        return self.outcome_after_outage

    def close(self):
        pass

    def ping(self):
        return True


def follow(launcher, **kwargs):
    lines = []
    reconnect = Reconnector("unix:///nowhere.sock", 60, sleep=lambda _: None)
    followed = follow_to_end(launcher, "c1", "name", lines.append, reconnect, **kwargs)
    return followed, lines, reconnect


def test_live_restore_a_broken_live_stream_goes_on_as_followed_logs_from_where_it_broke():
    launcher = Launcher([requests.exceptions.ConnectionError("aborted"), Outcome(exit_code=0)])
    before = time.time()
    followed, lines, reconnect = follow(launcher, follow=False, output=iter(["training-started"]))
    assert lines == ["training-started", "after the restart"]
    assert launcher.calls[0] == ("output",)
    (_, following, since) = launcher.calls[1]
    assert following and before - 2 < since <= time.time()
    assert followed.outcome.exit_code == 0 and not followed.outcome.killed_by_daemon
    assert len(reconnect.outages.periods) == 1


def test_a_kill_within_the_outage_is_the_daemons_shutdown():
    killed = Outcome(exit_code=137, finished_at=time.time())
    launcher = Launcher([requests.exceptions.ConnectionError("refused"), killed])
    followed, _, _ = follow(launcher, follow=True)
    assert "killed by the Docker daemon's shutdown" in followed.outcome.killed_by_daemon


def test_a_kill_while_the_daemon_answered_throughout_is_not():
    launcher = Launcher([Outcome(exit_code=137, finished_at=time.time())])
    followed, _, reconnect = follow(launcher, follow=True)
    assert followed.outcome.killed_by_daemon == ""
    assert reconnect.outages.periods == []
