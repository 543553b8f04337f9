"""dood-proxy's directories endpoint on a real filesystem (no Docker): every bad field refused, naming it,
with nothing made; nothing existing ever deleted; the budget. The attacks on a running proxy, as a
non-root user, are in tests/integration/test_proxy_directories.py."""

from __future__ import annotations

import os
import stat

import pytest

from dood.mounts.source_safety import LEAF_MODE, TEMPORARY_PREFIX
from dood.policy import Policy
from dood.proxy import directory_api as directories
from dood.proxy.allow_list import Refused
from dood.proxy.directory_api import (
    BURST,
    MAX_DEPTH,
    MAX_PATH_CHARS,
    DirectoryBudget,
    TooMany,
    make_directory,
    too_many_response,
)


@pytest.fixture
def tree(tmp_path):
    """An allowed root holding a read-only root and another run's directory with its result."""
    os.chmod(tmp_path, 0o755)
    root = tmp_path / "allowed"
    (root / "ro").mkdir(parents=True)
    other = root / "runs" / "dood-other-t1-0123456789"
    other.mkdir(parents=True)
    (other / "result.json").write_text('{"theirs": 1}')
    return root


@pytest.fixture
def policy(tree):
    return Policy(
        allowed_host_roots=[str(tree)],
        read_only_host_roots=[str(tree / "ro")],
        allowed_users=["50000:0", "1000:1000"],
    )


def ask(body, policy, budget=None):
    return make_directory(body, policy, budget or DirectoryBudget())


def refusal(body, policy, budget=None) -> Refused:
    with pytest.raises(Refused) as caught:
        ask(body, policy, budget)
    return caught.value


def snapshot(root) -> list[tuple[str, int, int, int]]:
    """Every entry below `root` with its owner, group and mode: what a refusal must leave unchanged."""
    entries = []
    for directory, names, files in os.walk(root):
        for name in [*names, *files]:
            info = os.lstat(os.path.join(directory, name))
            entries.append((os.path.join(directory, name), info.st_uid, info.st_gid, info.st_mode))
    return sorted(entries)


def test_a_leaf_for_an_allowed_user(tree, policy):
    answer = ask({"path": f"{tree}/runs/dood-mine-t1-0123456789", "user": "50000:0", "fresh": True}, policy)
    assert answer == {"path": f"{tree}/runs/dood-mine-t1-0123456789", "created": True, "user": "50000:0"}
    info = os.lstat(answer["path"])
    assert (info.st_gid, stat.S_IMODE(info.st_mode)) == (0, LEAF_MODE)
    assert not list(tree.rglob(f"{TEMPORARY_PREFIX}*"))


BAD_FIELDS = [
    # (body, status, words the reason must hold)
    ({"path": "{root}/x", "user": "1:4294967296"}, 400, ["user", "'1:4294967296'"]),  # was an OverflowError
    ({"path": "{root}/x", "user": "50000:0\n"}, 400, ["user", "\\n"]),
    ({"path": "{root}/x", "user": "050000:0"}, 400, ["user"]),
    ({"path": "{root}/x", "user": 50000}, 400, ["user"]),
    ({"path": "{root}/x", "user": "airflow"}, 400, ["user"]),
    ({"path": "{root}/x", "user": "4242:4242"}, 403, ["user 4242:4242", "allowed_users"]),
    ({"path": "{root}/x\x00y", "user": "50000:0"}, 400, ["path", "control character", "\\x00"]),
    ({"path": "{root}/x\n", "user": "50000:0"}, 400, ["path", "control character", "\\n"]),
    ({"path": "{root}/x\x1b[31m"}, 400, ["path", "control character"]),
    ({"path": "{root}/x\ud800", "user": "50000:0"}, 400, ["path", "\\ud800"]),  # a lone surrogate: no encoding
    ({"path": "{root}/\u202egpj.x", "user": "50000:0"}, 400, ["path", "\\u202e"]),  # right-to-left override
    ({"path": "{root}/a:b", "user": "50000:0"}, 400, ["path", "'a:b'", "A-Z a-z 0-9 _ . -"]),
    ({"path": "{root}/.dood-new-0123456789abcdef", "user": "50000:0"}, 400, ["path", "'.dood-new-"]),
    ({"path": "{root}/-rf", "user": "50000:0"}, 400, ["path", "'-rf'"]),
    ({"path": "{root}/caf\u00e9", "user": "50000:0"}, 400, ["path"]),
    ({"path": "{root}/" + "n" * 129, "user": "50000:0"}, 400, ["path", "128"]),
    ({"path": "{root}" + "/d" * (MAX_DEPTH + 1), "user": "50000:0"}, 400, ["path", f"at most {MAX_DEPTH}"]),
    ({"path": "{root}/" + "x" * MAX_PATH_CHARS}, 400, ["path", f"at most {MAX_PATH_CHARS}"]),
    ({"path": "{root}/a/../../x", "user": "50000:0"}, 400, ["path", "clean"]),
    ({"path": "relative/x", "user": "50000:0"}, 400, ["path", "absolute"]),
    ({"path": ["{root}/x"]}, 400, ["path must be a string"]),
    ({"path": "/etc/dood", "user": "50000:0"}, 403, ["none of the allowed roots"]),
    ({"path": "{root}", "user": "50000:0"}, 403, ["allowed root itself"]),
    ({"path": "{root}/ro/x", "user": "50000:0"}, 403, ["read-only root"]),
    ({"path": "{root}/x", "user": "50000:0", "fresh": "yes"}, 400, ["fresh"]),
    ({"path": "{root}/x", "mode": "0777"}, 400, ["unknown field", "'mode'"]),
    ({"path": "{root}/runs/dood-other-t1-0123456789", "clear": ["result.json"]}, 400, ["'clear'", "fresh"]),
    ({"path": "{root}/y", "clear": ["../../etc/passwd"]}, 400, ["'clear'"]),
    ([], 400, ["JSON object"]),
]


@pytest.mark.parametrize(("body", "status", "words"), BAD_FIELDS)
def test_every_bad_field_is_refused_by_name_and_nothing_is_made(tree, policy, body, status, words):
    body = _fill(body, tree)
    before = snapshot(tree)
    refused = refusal(body, policy)
    assert refused.status == status, refused.reason
    for word in words:
        assert word in refused.reason, (word, refused.reason)
    assert refused.message.isprintable(), "a reason goes to the log: no raw control character"
    assert snapshot(tree) == before
    assert (tree / "runs" / "dood-other-t1-0123456789" / "result.json").read_text() == '{"theirs": 1}'


def test_a_leaf_above_a_root_is_refused(tmp_path):
    os.chmod(tmp_path, 0o755)
    policy = Policy(allowed_host_roots=[str(tmp_path)], read_only_host_roots=[str(tmp_path / "a" / "ro")])
    refused = refusal({"path": str(tmp_path / "a"), "user": "50000:0"}, policy)
    assert refused.status == 403 and "holds the root" in refused.reason
    assert not (tmp_path / "a").exists()
    assert ask({"path": str(tmp_path / "a")}, policy)["created"]  # a directory only trusted users write is fine


def test_a_group_the_proxy_cannot_give_is_refused_before_anything_is_made(tree, policy, monkeypatch):
    monkeypatch.setattr(directories, "can_give_group", lambda gid: gid != 1000)
    before = snapshot(tree)
    refused = refusal({"path": f"{tree}/new/leaf", "user": "1000:1000"}, policy)
    assert refused.status == 403 and "cannot give a directory to group 1000" in refused.reason
    assert snapshot(tree) == before


def test_fresh_never_deletes_what_an_earlier_attempt_left(tree, policy):
    other = tree / "runs" / "dood-other-t1-0123456789"
    os.chown(other, os.geteuid(), 0)
    os.chmod(other, LEAF_MODE)
    refused = refusal({"path": str(other), "user": "50000:0", "fresh": True}, policy)
    assert refused.status == 409 and "'result.json'" in refused.reason and "never reused" in refused.reason
    assert (other / "result.json").read_text() == '{"theirs": 1}'
    # without fresh (a partition, a model directory): kept as it is, nothing in it touched
    assert ask({"path": str(other), "user": "50000:0"}, policy) == {
        "path": str(other),
        "created": False,
        "user": "50000:0",
    }
    assert (other / "result.json").read_text() == '{"theirs": 1}'


def test_fresh_accepts_an_empty_leaf_of_the_group_and_refuses_another_groups(tree, policy):
    path = f"{tree}/runs/dood-empty-t1-0123456789"
    assert ask({"path": path, "user": "50000:0", "fresh": True}, policy)["created"]
    assert not ask({"path": path, "user": "50000:0", "fresh": True}, policy)["created"]  # an attempt that died
    refused = refusal({"path": path, "user": "1000:1000", "fresh": True}, policy)
    assert refused.status == 409 and "group is 0, not 1000" in refused.reason


def test_a_file_where_the_directory_should_be_is_a_conflict(tree, policy):
    (tree / "afile").write_text("x")
    refused = refusal({"path": f"{tree}/afile", "user": "50000:0"}, policy)
    assert refused.status == 409 and "not a directory" in refused.reason
    assert (tree / "afile").read_text() == "x"


def test_a_symlink_where_the_leaf_should_be_is_refused(tree, policy):
    (tree / "link").symlink_to("/")
    refused = refusal({"path": f"{tree}/link", "user": "50000:0"}, policy)
    assert refused.status == 403 and "symlink" in refused.reason
    refused = refusal({"path": f"{tree}/link/etc/x", "user": "50000:0"}, policy)
    assert refused.status == 403 and "symlink" in refused.reason
    assert not os.path.exists("/etc/x")


def test_info_does_not_advertise_whom_the_proxy_trusts():
    assert directories.info() == {"proxy": "dood-proxy", "api": directories.API_VERSION}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_budget_lets_a_burst_through_then_refills_at_its_rate():
    clock = Clock()
    budget = DirectoryBudget(per_minute=60, burst=20, clock=clock)
    for _ in range(20):
        budget.take(1)
    with pytest.raises(TooMany) as caught:
        budget.take(3)
    assert caught.value.status == 429 and caught.value.retry_after == 3  # 1 a second
    clock.now += 2.5
    budget.take(2)  # 2.5 came back
    clock.now += 3600
    for _ in range(20):
        budget.take(1)  # never more than the burst
    with pytest.raises(TooMany):
        budget.take(1)


def test_the_budget_counts_directories_made_not_requests(tree, policy):
    clock = Clock()
    budget = DirectoryBudget(per_minute=60, burst=MAX_DEPTH, clock=clock)
    ask({"path": f"{tree}/a/b/c", "user": "50000:0"}, policy, budget)  # 3 made
    for _ in range(100):  # what exists costs nothing: the steps of a pipeline ask for their model directory
        ask({"path": f"{tree}/a/b/c", "user": "50000:0"}, policy, budget)
    deep = f"{tree}/" + "/".join(f"d{i}" for i in range(MAX_DEPTH))
    before = snapshot(tree)
    refused = refusal({"path": deep, "user": "50000:0"}, policy, budget)
    assert isinstance(refused, TooMany) and refused.retry_after == 3  # 16 asked, 13 left, 1 a second
    assert snapshot(tree) == before  # nothing made when over the budget
    clock.now += 3
    assert ask({"path": deep, "user": "50000:0"}, policy, budget)["created"]


def test_a_refused_request_drains_no_budget(tree, policy):
    budget = DirectoryBudget(per_minute=60, burst=MAX_DEPTH, clock=Clock())
    (tree / "runs" / "dood-other-t1-0123456789" / "link").symlink_to(tree / "ro")
    for _ in range(50):  # below a leaf, through a link: each would make 2, each is refused, none is charged
        assert refusal({"path": f"{tree}/runs/dood-other-t1-0123456789/link/a/b", "user": "50000:0"}, policy, budget)
    assert ask({"path": "/".join([str(tree), *"abcdefghijklmnop"]), "user": "50000:0"}, policy, budget)["created"]


def test_the_default_budget_fits_a_pipeline_and_bounds_an_attack():
    assert BURST >= MAX_DEPTH and directories.PER_MINUTE <= 600
    budget = DirectoryBudget(clock=Clock())
    made = 0
    with pytest.raises(TooMany):
        for _ in range(10_000):  # as fast as possible: only the burst gets through
            budget.take(1)
            made += 1
    assert made == BURST


def test_a_429_carries_retry_after():
    response = too_many_response(TooMany(2.2))
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 429 ") and b"\r\nRetry-After: 3" in head
    assert b"directories a minute" in body


def _fill(body, root):
    if isinstance(body, dict):
        return {key: _fill(value, root) for key, value in body.items()}
    if isinstance(body, list):
        return [_fill(value, root) for value in body]
    return body.replace("{root}", str(root)) if isinstance(body, str) else body
