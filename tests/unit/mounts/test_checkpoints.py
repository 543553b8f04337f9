"""Checkpoint directories (dood.mounts.checkpoints, dood.lifecycle.checkpoint, the proxy's `kind: checkpoint`) on a real
filesystem, no Docker: one directory per task instance and clear generation, never per try; made like every
leaf; reused whatever it holds; finished (removed or kept N) without following links; the proxy derives the
path from the task instance and its own stack, never from a client's path."""

from __future__ import annotations

import os
import re
import stat
from types import SimpleNamespace

import pytest

from dood.config.placement import Placement
from dood.exceptions import DoodConfigError
from dood.lifecycle.checkpoint import TaskCheckpoint, contents_of
from dood.mounts.checkpoints import (
    DONE_PREFIX,
    INSTANCE_PREFIX,
    CheckpointKey,
    LeafConflict,
    checkpoint_path,
    finish_checkpoint,
    first_try_of,
    open_checkpoint,
)
from dood.mounts.source_safety import LEAF_MODE, UnsafePath, make_skeleton
from dood.naming import TaskIdentity
from dood.policy import Policy
from dood.proxy.allow_list import Refused
from dood.proxy.directory_api import MAX_DEPTH, DirectoryBudget, describe, make_directory

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # dood-proxy's rule for every name below a root
KEY = CheckpointKey(stack="dood", dag_id="dood_retrain", task_id="train", run_id="scheduled__2026-12-06T00:00:00+00:00")


# --- names and paths ---


def test_the_directory_is_the_task_instances_not_the_trys():
    tries = [TaskIdentity("d", "t", "r", map_index=-1, try_number=n) for n in (1, 2, 3)]
    keys = {TaskCheckpoint.key(_context(max_tries=2), identity, retries=2) for identity in tries}
    assert len({checkpoint_path("/data", key) for key in keys}) == 1


@pytest.mark.parametrize(
    "other",
    [
        {"map_index": 0},
        {"run_id": "scheduled__2026-12-07T00:00:00+00:00"},
        {"task_id": "evaluate"},
        {"dag_id": "dood_other"},
        {"stack": "team-b"},
        {"first_try": 3},
    ],
)
def test_every_part_of_the_instance_gives_another_directory(other):
    changed = CheckpointKey(**{**KEY.__dict__, **other})
    assert checkpoint_path("/data", changed) != checkpoint_path("/data", KEY)


def test_two_map_indexes_never_share_a_directory_even_when_their_readable_parts_are_cut():
    long_run = "backfill__" + "x" * 200
    paths = {checkpoint_path("/d", CheckpointKey("dood", "d", "t", long_run, map_index=i)) for i in range(50)}
    assert len(paths) == 50


def test_names_are_what_the_proxy_accepts_whatever_the_ids_hold():
    key = CheckpointKey("dood", "dag.with:odd/chars" * 10, "täsk id" * 8, "manual__2026:+00:00 " * 12, 7)
    path = checkpoint_path("/srv/data/dood-checkpoints", key)
    names = path[len("/srv/data/dood-checkpoints/") :].split("/")
    assert len(names) == 3 <= MAX_DEPTH
    for name in [*names, f"{DONE_PREFIX}{10**18:019d}-{names[-1]}"]:
        assert NAME.fullmatch(name), name


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dag_id", ""),
        ("run_id", "a\nb"),
        ("task_id", "x" * 251),
        ("map_index", -2),
        ("first_try", 0),
        ("map_index", "1"),
    ],
)
def test_a_bad_identity_is_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        CheckpointKey(**{**KEY.__dict__, field: value})


@pytest.mark.parametrize(
    ("try_number", "max_tries", "retries", "first"),
    [
        (1, 2, 2, 1),  # first try, never cleared
        (3, 2, 2, 1),  # the last retry: still the same run-through
        (4, 5, 2, 4),  # cleared after try 3 (max_tries = 3 + 2): a new run-through from try 4
        (6, 5, 2, 4),  # ... and its retries keep it
        (2, None, 2, 1),  # Airflow did not say: the one directory
        (2, 7, 0, 2),  # retries raised since: never after this try
    ],
)
def test_a_clear_starts_a_new_generation_a_retry_does_not(try_number, max_tries, retries, first):
    assert first_try_of(try_number, max_tries, retries) == first


# --- made like every leaf, reused whatever it holds ---


@pytest.fixture
def root(tmp_path):
    os.chmod(tmp_path, 0o755)
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    return allowed


def test_made_as_a_leaf_then_reused_with_what_a_try_left(root):
    path, made = open_checkpoint(str(root / "dood-checkpoints"), KEY, [str(root)], gid=0)
    info = os.lstat(path)
    assert made and stat.S_IMODE(info.st_mode) == LEAF_MODE and info.st_gid == 0
    parent = os.lstat(os.path.dirname(path))
    assert not parent.st_mode & (stat.S_IWGRP | stat.S_IWOTH), "above a leaf only trusted users write"
    (root / path / "checkpoint.joblib").write_bytes(b"epoch 3")
    again, made_again = open_checkpoint(str(root / "dood-checkpoints"), KEY, [str(root)], gid=0)
    assert again == path and not made_again
    assert (root / path / "checkpoint.joblib").read_bytes() == b"epoch 3"


def test_a_squatters_empty_plain_directory_becomes_the_leaf_a_full_one_or_another_groups_is_refused(root):
    path = checkpoint_path(str(root / "dood-checkpoints"), KEY)
    make_skeleton(path, [str(root)])  # what any client of the plain endpoint can ask for
    open_checkpoint(str(root / "dood-checkpoints"), KEY, [str(root)], gid=0)
    assert stat.S_IMODE(os.lstat(path).st_mode) == LEAF_MODE
    other = CheckpointKey(**{**KEY.__dict__, "map_index": 1})
    squatted = checkpoint_path(str(root / "dood-checkpoints"), other)
    make_skeleton(squatted, [str(root)])
    (root / squatted / "planted").write_text("x")
    with pytest.raises(LeafConflict):
        open_checkpoint(str(root / "dood-checkpoints"), other, [str(root)], gid=0)
    with pytest.raises(LeafConflict, match="group"):
        open_checkpoint(str(root / "dood-checkpoints"), KEY, [str(root)], gid=1000)


def test_a_symlink_above_the_checkpoint_is_refused(root, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", root / "dood-checkpoints")
    with pytest.raises(UnsafePath):
        open_checkpoint(str(root / "dood-checkpoints"), KEY, [str(root)], gid=0)
    assert os.listdir(tmp_path / "elsewhere") == []


# --- finished: removed, or the newest kept ---


def _success(root, key, keep, clock):
    path, _ = open_checkpoint(str(root / "dood-checkpoints"), key, [str(root)], gid=0)
    (root / path / "state.json").write_text("{}")
    return path, finish_checkpoint(str(root / "dood-checkpoints"), key, [str(root)], keep=keep, clock=lambda: clock)


def test_removed_when_the_task_succeeds(root):
    path, done = _success(root, KEY, 0, 1)
    assert not os.path.exists(path) and done.removed == (path,) and done.kept is None


def test_retention_keeps_the_tasks_newest_finished_checkpoints(root):
    runs = [CheckpointKey(**{**KEY.__dict__, "run_id": f"run{i}"}) for i in range(4)]
    for clock, key in enumerate(runs, start=1):
        _success(root, key, 2, clock)
    task_dir = os.path.dirname(checkpoint_path(str(root / "dood-checkpoints"), KEY))
    kept = sorted(os.listdir(task_dir))
    assert [name.split("-", 2)[1] for name in kept] == [f"{3:019d}", f"{4:019d}"]
    assert all(name.endswith(k.instance_dir_name()) for name, k in zip(kept, runs[2:], strict=True))


def test_a_running_instance_is_never_touched_by_another_ones_finish(root):
    running = CheckpointKey(**{**KEY.__dict__, "run_id": "still-running"})
    path, _ = open_checkpoint(str(root / "dood-checkpoints"), running, [str(root)], gid=0)
    (root / path / "checkpoint.joblib").write_text("epoch 2")
    _success(root, KEY, 0, 1)
    assert (root / path / "checkpoint.joblib").read_text() == "epoch 2"


def test_a_clears_leftovers_go_when_the_new_generation_succeeds(root):
    cleared = CheckpointKey(**{**KEY.__dict__, "first_try": 1})
    old, _ = open_checkpoint(str(root / "dood-checkpoints"), cleared, [str(root)], gid=0)
    (root / old / "checkpoint.joblib").write_text("epoch 2 of the killed try")
    new, done = _success(root, CheckpointKey(**{**KEY.__dict__, "first_try": 3}), 0, 1)
    assert not os.path.exists(old) and not os.path.exists(new) and set(done.removed) == {old, new}


def test_removal_never_follows_a_link_a_step_planted(root, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "model.joblib").write_text("champion")
    path, _ = open_checkpoint(str(root / "dood-checkpoints"), KEY, [str(root)], gid=0)
    os.symlink(precious, f"{path}/link")
    os.mkdir(f"{path}/sub")
    os.symlink(precious / "model.joblib", f"{path}/sub/file-link")
    finish_checkpoint(str(root / "dood-checkpoints"), KEY, [str(root)], keep=0)
    assert not os.path.exists(path)
    assert (precious / "model.joblib").read_text() == "champion"


def test_a_task_directory_someone_untrusted_may_write_is_left_alone(root):
    path, _ = open_checkpoint(str(root / "dood-checkpoints"), KEY, [str(root)], gid=0)
    os.chmod(os.path.dirname(path), 0o777)
    with pytest.raises(UnsafePath):
        finish_checkpoint(str(root / "dood-checkpoints"), KEY, [str(root)], keep=0)
    assert os.path.isdir(path)


def test_finishing_what_does_not_exist_is_nothing(root):
    done = finish_checkpoint(str(root / "dood-checkpoints"), KEY, [str(root)], keep=0)
    assert (done.kept, done.removed, done.problems) == (None, (), ())


# --- attacks on finish (docs/security.md, "Attacks tried": C1-C8) ---


def test_a_live_instances_name_is_never_a_finished_ones_whatever_its_run_id(root):
    """C1: a run id shaped like a finished name ('done-5-x', 'done-<19 digits>') is a live instance's
    `run-...`; another instance's finish (keep 1) neither removes it nor counts it among the finished."""
    names = []
    for run_id in ("done-5-x", f"done-{10**18:019d}-run-x", "legit"):
        key = CheckpointKey(**{**KEY.__dict__, "run_id": run_id})
        path, _ = open_checkpoint(str(root / "dood-checkpoints"), key, [str(root)], gid=0)
        (root / path / "epoch").write_text("3")
        names.append(os.path.basename(path))
        assert names[-1].startswith(INSTANCE_PREFIX) and not names[-1].startswith(DONE_PREFIX)
    _, done = _success(root, CheckpointKey(**{**KEY.__dict__, "run_id": "other"}), 1, 7)
    task_dir = os.path.dirname(path)
    assert done.removed == () and done.kept and os.path.basename(done.kept).startswith(f"{DONE_PREFIX}{7:019d}-run-")
    assert all(os.path.isfile(f"{task_dir}/{name}/epoch") for name in names), "every live checkpoint stays"


def _leaf_with_link(root, tmp_path):
    """A leaf L (group-writable, as a step's run directory) holding `team-a -> <outside>`, outside holding
    checkpoint-shaped directories (what C2 deleted outside the allowed root)."""
    outside = tmp_path / "outside" / "dood-checkpoints"
    task_dir = outside / "team-a" / os.path.basename(os.path.dirname(checkpoint_path("/", KEY)))
    task_dir.mkdir(parents=True)
    for name in (KEY.instance_dir_name(), f"{DONE_PREFIX}{1:019d}-{KEY.instance_dir_name()}"):
        (task_dir / name).mkdir(mode=0o700)
        os.chmod(task_dir / name, LEAF_MODE)
        (task_dir / name / "model.ckpt").write_text("precious")
    leaf = root / "run1" / "dood-checkpoints"
    leaf.mkdir(parents=True)
    os.chmod(leaf, LEAF_MODE)
    os.symlink(outside / "team-a", leaf / "team-a")
    return leaf, task_dir


def test_finish_never_follows_a_link_above_the_task_directory(root, tmp_path):
    """C2: a root reached through a leaf a step writes (and a link it planted there) is refused on the fd walk
    from /, as open refuses it; nothing outside is touched."""
    leaf, outside = _leaf_with_link(root, tmp_path)
    key = CheckpointKey(**{**KEY.__dict__, "stack": "team-a"})
    before = sorted(str(p) for p in outside.rglob("*"))
    with pytest.raises(UnsafePath, match="writable by group"):
        finish_checkpoint(str(leaf), key, [str(root)], keep=0)
    os.chmod(leaf, 0o755)  # even where the leaf is not group-writable: the link is never followed
    with pytest.raises(UnsafePath, match="not a real directory"):
        finish_checkpoint(str(leaf), key, [str(root)], keep=0)
    assert sorted(str(p) for p in outside.rglob("*")) == before


def test_finish_removes_only_checkpoint_leaves_anything_else_is_left_and_said(root):
    """C8: a plain directory (0755, another request's) at the derived path, with a leaf in it, is left."""
    path = checkpoint_path(str(root / "dood-checkpoints"), KEY)
    make_skeleton(f"{path}/run-leaf", [str(root)])
    done = finish_checkpoint(str(root / "dood-checkpoints"), KEY, [str(root)], keep=0)
    assert os.path.isdir(f"{path}/run-leaf") and done.removed == ()
    assert len(done.problems) == 1 and "not a checkpoint directory" in done.problems[0], done.problems


def test_a_tree_of_any_depth_is_removed_without_recursion(root):
    """C6: 1500 levels (deeper than Python's recursion limit and than the fds kept open)."""
    path, _ = open_checkpoint(str(root / "dood-checkpoints"), KEY, [str(root)], gid=0)
    fd = os.open(path, os.O_RDONLY)
    for _ in range(1500):
        os.mkdir("a", dir_fd=fd)
        os.symlink("/etc", "link", dir_fd=fd)
        child = os.open("a", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)
    done = finish_checkpoint(str(root / "dood-checkpoints"), KEY, [str(root)], keep=0)
    assert done.removed == (path,) and done.problems == () and not os.path.lexists(path)


def test_one_finish_removes_a_bounded_number_of_entries_and_the_next_goes_on(root):
    """C6/C7: work per request is bounded; what is left is said, and the task's next finish removes it."""
    path, _ = open_checkpoint(str(root / "dood-checkpoints"), KEY, [str(root)], gid=0)
    for i in range(30):
        (root / path / f"f{i}").write_text("x")
    done = finish_checkpoint(str(root / "dood-checkpoints"), KEY, [str(root)], keep=0, max_entries=10)
    assert done.removed == () and "at most 10 entries" in done.problems[0], done.problems
    task_dir = os.path.dirname(path)
    (left,) = os.listdir(task_dir)
    assert left.startswith(DONE_PREFIX) and len(os.listdir(f"{task_dir}/{left}")) == 20
    other = CheckpointKey(**{**KEY.__dict__, "run_id": "next"})
    _, later = _success(root, other, 0, 5)
    assert os.listdir(task_dir) == [] and len(later.removed) == 2, later


def test_the_root_is_a_dood_checkpoints_directory_nothing_else(root):
    """C4: open and finish refuse any other root; the operator's default and a task's setting follow."""
    for other in (str(root / "models"), str(root / "dood-checkpoints" / "x"), "relative/dood-checkpoints"):
        with pytest.raises(UnsafePath, match="dood-checkpoints"):
            open_checkpoint(other, KEY, [str(root)], gid=0)
        with pytest.raises(UnsafePath):
            finish_checkpoint(other, KEY, [str(root)], keep=0)
    assert os.listdir(root) == []
    setting = TaskCheckpoint.of(True, retention=0, root=None, placement=None, task_id="t")
    assert setting.root_for(SimpleNamespace(runs_root="/data/runs/")) == "/data/runs/dood-checkpoints"
    with pytest.raises(DoodConfigError, match="named 'dood-checkpoints'"):
        TaskCheckpoint.of(True, retention=0, root="/shared/models", placement=None, task_id="t")


def test_the_plain_endpoint_never_makes_anything_in_the_checkpoint_tree(root, policy):
    """C1/C8: only `kind: checkpoint` makes below a `dood-checkpoints` directory (no squatted name there)."""
    for body in (
        {"path": f"{root}/dood-checkpoints"},
        {"path": f"{root}/dood-checkpoints/team-a/x", "user": "50000:0", "fresh": True},
    ):
        with pytest.raises(Refused) as caught:
            ask(body, policy)
        assert caught.value.status == 403 and "kind" in caught.value.message, caught.value.message
    assert sorted(os.listdir(root)) == ["ro"]


def test_the_log_line_says_what_was_done():
    assert describe({"kind": "checkpoint", "path": "/p", "kept": None, "removed": ["/p"], "problems": []}) == (
        "checkpoint /p finished: kept none, removed 1 director(ies), 0 left with a problem"
    )
    assert describe({"path": "/d", "created": True, "user": "1:2"}) == "directory /d made, written by 1:2"
    assert describe({"kind": "checkpoint", "path": "/c", "created": False, "user": "1:2"}).startswith(
        "checkpoint /c found"
    )


# --- dood-proxy: `kind: checkpoint` ---


@pytest.fixture
def policy(root):
    (root / "ro").mkdir()
    return Policy(allowed_host_roots=[str(root)], read_only_host_roots=[str(root / "ro")], allowed_users=["50000:0"])


def ask(body, policy, stack="team-a"):
    return make_directory(body, policy, DirectoryBudget(), stack=stack)


def checkpoint(allowed, **fields):
    return {
        "kind": "checkpoint",
        "root": f"{allowed}/dood-checkpoints",
        "task": KEY.to_request(),
        "user": "50000:0",
        **fields,
    }


def test_the_proxy_derives_the_path_with_its_own_stack(root, policy):
    answer = ask(checkpoint(root), policy)
    mine = CheckpointKey(**{**KEY.__dict__, "stack": "team-a"})
    assert answer == {
        "kind": "checkpoint",
        "path": checkpoint_path(f"{root}/dood-checkpoints", mine),
        "created": True,
        "user": "50000:0",
    }
    assert ask(checkpoint(root), policy)["created"] is False  # the next try's: the same directory
    other_stack = ask(checkpoint(root), policy, stack="team-b")["path"]
    assert other_stack != answer["path"]


def test_the_proxy_finishes_only_the_derived_directory(root, policy):
    path = ask(checkpoint(root), policy)["path"]
    neighbour = root / "dood-checkpoints" / "team-a" / "not-a-checkpoint"
    neighbour.mkdir()
    answer = ask(
        {"kind": "checkpoint", "root": f"{root}/dood-checkpoints", "task": KEY.to_request(), "action": "finish"}, policy
    )
    assert answer["removed"] == [path] and not os.path.exists(path) and neighbour.is_dir()


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        ({"path": "/anywhere"}, 400, "unknown field"),
        ({"kind": "leaf"}, 400, "kind"),
        ({"task": {"dag_id": "d", "task_id": "t"}}, 400, "run_id"),
        ({"task": {**KEY.to_request(), "stack": "team-b"}}, 400, "unknown field"),
        ({"task": {**KEY.to_request(), "map_index": -5}}, 400, "map_index"),
        ({"root": "/etc"}, 400, "named 'dood-checkpoints'"),
        ({"root": "/etc/dood-checkpoints"}, 403, "allowed roots"),
        ({"root": "relative/path"}, 400, "root"),
        ({"root": "/tmp/../etc"}, 400, "root"),
        ({"user": "0:0"}, 403, "allowed_users"),
        ({"user": "50000"}, 400, "user"),
        ({"user": "1234:0"}, 403, "allowed_users"),
        ({"user": None}, 400, "user"),
        ({"action": "delete"}, 400, "action"),
        ({"keep": 2}, 400, "keep"),
        ({"action": "finish", "keep": 101, "user": None}, 400, "keep"),
    ],
)
def test_every_bad_field_is_refused_by_name_and_nothing_is_made(root, policy, change, status, words):
    body = {k: v for k, v in checkpoint(root, **change).items() if v is not None}
    if change.get("user", "") is None:
        body.pop("user", None)
    before = sorted(os.listdir(root))
    with pytest.raises(Refused) as caught:
        ask(body, policy)
    assert caught.value.status == status and words in caught.value.message, caught.value.message
    assert sorted(os.listdir(root)) == before


def test_a_checkpoint_under_a_read_only_root_is_refused_open_and_finish(root, policy):
    """C3: a finish under the read-only root is refused as an open is (nothing there is a container's)."""
    under_ro = (
        root / "ro" / "dood-checkpoints" / "team-a" / os.path.basename(os.path.dirname(checkpoint_path("/", KEY)))
    )
    under_ro.mkdir(parents=True)
    (victim := under_ro / "done-0000000000000000001-run-x-aaaaaaaaaaaaaaaaaaaaaaaaaa-f1").mkdir()
    for fields in ({}, {"action": "finish", "user": None}):
        body = {
            k: v for k, v in checkpoint(root, root=f"{root}/ro/dood-checkpoints", **fields).items() if v is not None
        }
        with pytest.raises(Refused) as caught:
            ask(body, policy)
        assert caught.value.status == 403 and "read-only" in caught.value.message, caught.value.message
    assert victim.is_dir()


def test_a_proxy_that_does_not_pass_its_stack_refuses_checkpoints(root, policy):
    with pytest.raises(Refused) as caught:
        make_directory(checkpoint(root), policy, DirectoryBudget())
    assert caught.value.status == 501


# --- the task's setting, and what the log shows ---


def test_the_setting_is_validated_with_the_fix_in_the_message():
    with pytest.raises(DoodConfigError, match="need checkpoint=True"):
        TaskCheckpoint.of(False, retention=2, root=None, placement=None, task_id="t")
    with pytest.raises(DoodConfigError, match="checkpoint_retention"):
        TaskCheckpoint.of(True, retention=-1, root=None, placement=None, task_id="t")
    with pytest.raises(DoodConfigError, match="absolute"):
        TaskCheckpoint.of(True, retention=0, root="rel", placement=None, task_id="t")
    with pytest.raises(DoodConfigError, match="needs wait=True"):
        TaskCheckpoint.of(True, retention=0, root=None, placement=None, task_id="t", wait=False)
    shared = Placement(hosts=("a", "b"), queue="q", pool="p", pool_slots=1)
    with pytest.raises(DoodConfigError, match="every one of them mounts"):
        TaskCheckpoint.of(True, retention=0, root=None, placement=shared, task_id="t")
    assert (
        TaskCheckpoint.of(True, retention=0, root="/shared/dood-checkpoints", placement=shared, task_id="t") is not None
    )
    assert TaskCheckpoint.of(False, retention=None, root=None, placement=None, task_id="t") is None


def test_contents_count_files_and_bytes_without_following_links(tmp_path):
    (tmp_path / "checkpoint.joblib").write_bytes(b"x" * 100)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "state.json").write_bytes(b"{}")
    os.symlink("/etc", tmp_path / "link")
    contents = contents_of(str(tmp_path))
    assert (contents.files, contents.bytes) == (2, 102)
    assert "2 file(s), 102 bytes" in contents.describe()
    assert contents_of(str(tmp_path / "missing")) is None
    (empty := tmp_path / "empty").mkdir()
    assert contents_of(str(empty)).describe() == "empty"


def _context(max_tries):
    return {"ti": SimpleNamespace(max_tries=max_tries)}


def test_a_root_nested_in_a_checkpoint_tree_is_refused():
    """Attack pass 4, A: a root inside another checkpoint tree would make a plain directory at an instance's
    path (its open then 409 for good)."""
    from dood.mounts.checkpoints import check_root
    from dood.mounts.source_safety import UnsafePath

    check_root("/srv/ml/artifacts/dood-checkpoints")
    for nested in (
        "/srv/ml/artifacts/dood-checkpoints/dood/d.t-abc/run-r-x-f1/dood-checkpoints",
        "/srv/dood-checkpoints/x/dood-checkpoints",
    ):
        with pytest.raises(UnsafePath, match="inside another 'dood-checkpoints' tree"):
            check_root(nested)


def test_a_directory_swapped_for_a_link_while_it_is_read_is_never_followed(tmp_path, monkeypatch):
    """The steps write while the checkpoint is described: a directory seen by lstat may be a link by the time it
    is listed. Simulated by taking every entry for a directory: a link to /etc is then opened (O_NOFOLLOW, by
    descriptor) and refused, so nothing of /etc is ever counted; by path, /etc was listed."""
    (tmp_path / "checkpoint.joblib").write_bytes(b"x" * 100)
    os.symlink("/etc", tmp_path / "swapped")
    monkeypatch.setattr("dood.lifecycle.checkpoint.stat.S_ISDIR", lambda mode: True)
    assert contents_of(str(tmp_path)) is None  # refused, never listed
    os.symlink(tmp_path, tmp_path.parent / "link-to-checkpoint")
    monkeypatch.undo()
    assert contents_of(str(tmp_path.parent / "link-to-checkpoint")) is None  # the directory itself as a link
