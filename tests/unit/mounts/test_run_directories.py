"""The Airflow side of the directories endpoint (dood.mounts.run_directories.HostDirectories): what it asks of
dood-proxy, and how it takes a 429 or a 409. The proxy is a stand-in here (pure unit test); the real one is
asked in tests/integration/test_proxy_directories.py."""

from __future__ import annotations

import pytest

from dood.exceptions import DoodConfigError, DoodError
from dood.mounts import run_directories as module
from dood.mounts.mount_map import MountMap
from dood.mounts.run_directories import HostDirectories
from dood.policy import Policy


class Answer:
    def __init__(self, status: int, message: str = "", headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        self.headers = headers or {}
        self._message = message
        self.text = message

    def json(self):
        return {"message": self._message}


class Proxy:
    """Answers each POST with the next of `answers`; records the bodies."""

    base_url = "http+docker://localhost"

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.asked: list[dict] = []

    def post(self, url, json, timeout):
        assert url.endswith("/dood/v1/directories")
        self.asked.append(json)
        return self.answers.pop(0)


def directories(proxy: Proxy) -> HostDirectories:
    policy = Policy(allowed_host_roots=["/data"])
    return HostDirectories(proxy, policy, MountMap([], identity=True), through_proxy=True)


def test_a_run_directory_is_asked_fresh_and_never_cleared():
    proxy = Proxy(Answer(200), Answer(200), Answer(200))
    made = directories(proxy)
    made.for_container("/data/runs/dood-a-t1-0123456789", "50000", fresh=True, what="run")
    made.for_container("/data/runs/dood-a-t2-0123456789", "50000:0", fresh=True, what="run")
    made.for_container("/data/ml/artifacts/p/part", "50000:0", what="partition")
    assert proxy.asked == [
        {"path": "/data/runs/dood-a-t1-0123456789", "user": "50000:0", "fresh": True},
        {"path": "/data/runs/dood-a-t2-0123456789", "user": "50000:0", "fresh": True},
        {"path": "/data/ml/artifacts/p/part", "user": "50000:0"},
    ]


def test_a_429_is_waited_out_as_the_proxy_says(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(module.time, "sleep", slept.append)
    proxy = Proxy(
        Answer(429, "budget", {"Retry-After": "2"}),
        Answer(429, "budget", {"Retry-After": "nan"}),
        Answer(429, "budget", {"Retry-After": "86400"}),
        Answer(200),
    )
    directories(proxy).for_container("/data/runs/x", "50000:0", fresh=True, what="run")
    assert slept == [2.0, 1.0, 30.0] and len(proxy.asked) == 4


def test_a_budget_that_stays_spent_fails_the_try_with_the_reason(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(module, "BUDGET_PATIENCE_SECONDS", 5.0)
    monkeypatch.setattr(module.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(module.time, "sleep", lambda seconds: now.__setitem__(0, now[0] + seconds))
    proxy = Proxy(*[Answer(429, "more than 300 directories a minute", {"Retry-After": "2"})] * 10)
    with pytest.raises(DoodError, match="kept refusing.*more than 300 directories a minute"):
        directories(proxy).for_container("/data/runs/x", "50000:0", fresh=True, what="run")
    assert len(proxy.asked) == 3  # at 0, 2 and 4 s; the next wait would end past the 5 s


def test_an_earlier_attempts_leftovers_fail_the_try_and_a_refusal_names_the_fix():
    proxy = Proxy(Answer(409, "already holds ('result.json')"), Answer(403, "user 4242:4242 is not one of"))
    with pytest.raises(DoodError, match="already holds") as caught:
        directories(proxy).for_container("/data/runs/x", "50000:0", fresh=True, what="run")
    assert not isinstance(caught.value, DoodConfigError)  # not the config: the next try has its own directory
    with pytest.raises(DoodConfigError, match="4242:4242"):
        directories(proxy).for_container("/data/runs/y", "4242:4242", what="run")


class Body(Answer):
    def __init__(self, body: dict) -> None:
        super().__init__(200)
        self.body = body

    def json(self):
        return self.body


def test_a_checkpoint_names_the_task_instance_never_a_path():
    from dood.mounts.checkpoints import CheckpointKey, checkpoint_path

    key = CheckpointKey("dood", "dag", "train", "run1", map_index=2, first_try=1)
    expected = checkpoint_path("/data/ckpt", key)
    proxy = Proxy(
        Body({"kind": "checkpoint", "path": expected, "created": True}),
        Body({"kind": "checkpoint", "path": expected, "kept": None, "removed": [expected], "problems": []}),
    )
    made = directories(proxy)
    assert made.for_checkpoint("/data/ckpt", key, "50000:0", what="train") == expected
    done = made.finish_checkpoint("/data/ckpt", key, keep=0, what="train")
    assert done.removed == (expected,)
    assert proxy.asked == [
        {"kind": "checkpoint", "root": "/data/ckpt", "task": key.to_request(), "user": "50000:0"},
        {"kind": "checkpoint", "root": "/data/ckpt", "task": key.to_request(), "action": "finish", "keep": 0},
    ]


def test_a_checkpoint_the_proxy_derived_elsewhere_fails_the_try_saying_why():
    from dood.mounts.checkpoints import CheckpointKey

    key = CheckpointKey("dood", "dag", "train", "run1")
    proxy = Proxy(Body({"kind": "checkpoint", "path": "/data/ckpt/other-stack/x/y", "created": True}))
    with pytest.raises(DoodError, match="stack differs"):
        directories(proxy).for_checkpoint("/data/ckpt", key, "50000:0", what="train")
    with pytest.raises(DoodConfigError, match="numeric non-root"):
        directories(Proxy()).for_checkpoint("/data/ckpt", key, "0:0", what="train")
