"""dood.mounts.source_safety on a real filesystem: which bind sources someone untrusted could re-point, and leaves."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from dood.mounts import source_safety as hostpaths
from dood.mounts.source_safety import (
    LEAF_MODE,
    TEMPORARY_PREFIX,
    LeafConflict,
    UnsafePath,
    bind_sources,
    check_bind_source,
    make_leaf,
    make_skeleton,
    missing_directories,
    unsafe_bind_sources,
)

ME = frozenset({os.geteuid()})
STRANGER = 54321


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "root"
    root.mkdir(mode=0o755)
    os.chmod(tmp_path, 0o755)
    return root


def test_a_plain_directory_chain_is_safe(root):
    (root / "work").mkdir(mode=0o755)
    check_bind_source(str(root / "work"), [str(root)], ME)
    with pytest.raises(UnsafePath, match="does not exist: the daemon would create it"):
        check_bind_source(str(root / "work" / "missing-leaf"), [str(root)], ME)  # as root, where the path says


def test_a_symlink_anywhere_in_the_chain_is_refused(root):
    (root / "real").mkdir()
    (root / "link").symlink_to("/")
    with pytest.raises(UnsafePath, match="symlink"):
        check_bind_source(str(root / "link" / "etc"), [str(root)], ME)
    with pytest.raises(UnsafePath, match="symlink"):
        check_bind_source(str(root / "link"), [str(root)], ME)  # the source itself


def test_a_directory_someone_else_owns_cannot_be_above_a_bind_source(root):
    theirs = root / "theirs"
    theirs.mkdir(mode=0o755)
    with pytest.raises(UnsafePath, match=f"owned by uid {os.geteuid()}"):
        check_bind_source(str(theirs / "x"), [str(root)], frozenset({STRANGER}))


def test_a_leaf_is_bindable_but_nothing_below_it(root):
    leaf = root / "leaf"
    make_leaf(str(leaf), [str(root)], gid=os.getegid(), trusted=ME)
    check_bind_source(str(leaf), [str(root)], ME)  # the leaf itself: its entry is in a trusted directory
    with pytest.raises(UnsafePath, match="writable by group"):
        check_bind_source(str(leaf / "self"), [str(root)], ME)  # below it: its group could plant a link


def test_group_or_world_writable_directories_are_refused_below_the_root(root):
    shared = root / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(UnsafePath, match="writable by group or others"):
        check_bind_source(str(shared / "x"), [str(root)], ME)
    os.chmod(shared, 0o1777)  # sticky is no excuse below the root
    with pytest.raises(UnsafePath, match="writable by group or others"):
        check_bind_source(str(shared / "x"), [str(root)], ME)


def test_sockets_and_devices_are_never_sources(root):
    import socket

    path = root / "s.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        with pytest.raises(UnsafePath, match="neither a directory nor a regular file"):
            check_bind_source(str(path), [str(root)], ME)


def test_outside_every_root_is_refused(root, tmp_path):
    with pytest.raises(UnsafePath, match="none of the allowed roots"):
        check_bind_source(str(tmp_path / "elsewhere"), [str(root)], ME)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another group needs root")
def test_make_leaf_shares_it_with_the_group_and_never_changes_an_existing_one(root):
    leaf = root / "artifacts" / "pipe" / "partition"
    assert make_leaf(str(leaf), [str(root)], gid=STRANGER)
    info = os.lstat(leaf)
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, STRANGER, LEAF_MODE)
    assert os.lstat(root / "artifacts").st_uid == 0 and stat.S_IMODE(os.lstat(root / "artifacts").st_mode) == 0o755
    (leaf / "model.pkl").write_text("the champion")
    assert not make_leaf(str(leaf), [str(root)], gid=STRANGER + 7)
    assert os.lstat(leaf).st_gid == STRANGER  # an existing leaf is kept as it is
    assert (leaf / "model.pkl").read_text() == "the champion"  # and nothing in it is ever removed
    assert _temporaries(root) == []


def test_a_fresh_leaf_is_new_or_an_empty_leaf_of_the_group_and_nothing_is_removed(root):
    gid = os.getegid()
    run_dir = root / "runs" / "dood-t-t1-0123456789"
    assert make_leaf(str(run_dir), [str(root)], gid=gid, fresh=True, trusted=ME)
    assert not make_leaf(str(run_dir), [str(root)], gid=gid, fresh=True, trusted=ME)  # empty: an attempt that died
    (run_dir / "result.json").write_text('{"stale": true}')
    with pytest.raises(LeafConflict, match="'result.json'.*never reused"):
        make_leaf(str(run_dir), [str(root)], gid=gid, fresh=True, trusted=ME)
    assert (run_dir / "result.json").read_text() == '{"stale": true}'
    assert not make_leaf(str(run_dir), [str(root)], gid=gid, trusted=ME)  # not fresh: kept, as before


def test_a_fresh_leaf_of_another_group_or_mode_is_refused(root):
    other = root / "runs" / "theirs"
    other.parent.mkdir()
    other.mkdir()
    os.chmod(other, 0o775)  # writable by its group: what others may have put there is never taken
    with pytest.raises(LeafConflict, match="mode is 775, not 2770"):
        make_leaf(str(other), [str(root)], gid=os.getegid(), fresh=True, trusted=ME)
    os.chmod(other, 0o2770)
    with pytest.raises(LeafConflict, match=f"group is {os.getegid()}, not {os.getegid() + 1}"):
        make_leaf(str(other), [str(root)], gid=os.getegid() + 1, fresh=True, trusted=ME | {0})


def test_an_empty_directory_only_we_write_squatting_a_run_directory_becomes_the_leaf(root):
    """Someone asked a plain directory where another stack's next run directory will be: it is empty and only
    this process writes it, so it becomes the fresh leaf asked for (not a 409 forever)."""
    squatted = root / "runs" / "next"
    squatted.parent.mkdir()
    squatted.mkdir(mode=0o755)
    assert make_leaf(str(squatted), [str(root)], gid=os.getegid(), fresh=True, trusted=ME) is False
    assert stat.S_IMODE(squatted.stat().st_mode) == 0o2770
    (squatted / "result.json").write_text("{}")
    os.chmod(squatted, 0o755)
    with pytest.raises(LeafConflict, match="not empty"):
        make_leaf(str(squatted), [str(root)], gid=os.getegid(), fresh=True, trusted=ME)


def test_what_is_not_a_directory_at_the_leaf_is_refused_and_kept(root):
    (root / "file").write_text("x")
    (root / "link").symlink_to(root)
    with pytest.raises(LeafConflict, match="not a directory"):
        make_leaf(str(root / "file"), [str(root)], gid=os.getegid(), trusted=ME)
    with pytest.raises(UnsafePath, match="symlink"):
        make_leaf(str(root / "link"), [str(root)], gid=os.getegid(), trusted=ME)
    assert (root / "file").read_text() == "x" and (root / "link").is_symlink()


def test_a_group_this_process_cannot_give_is_refused_before_anything_is_made(root, monkeypatch):
    monkeypatch.setattr(hostpaths, "can_give_group", lambda gid: False)
    with pytest.raises(UnsafePath, match="cannot give a directory to group"):
        make_leaf(str(root / "a" / "b"), [str(root)], gid=os.getegid(), trusted=ME)
    assert os.listdir(root) == []


def test_a_leaf_whose_group_cannot_be_set_leaves_nothing_behind(root, monkeypatch):
    def refuse(fd, uid, gid):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(hostpaths.os, "fchown", refuse)
    with pytest.raises(PermissionError):
        make_leaf(str(root / "leaf"), [str(root)], gid=os.getegid(), trusted=ME)
    assert os.listdir(root) == []  # neither the leaf nor its temporary name


def test_a_leaf_appearing_meanwhile_is_never_replaced(root, monkeypatch):
    """Two requests for one leaf: the one renaming second finds the first's and keeps it (RENAME_NOREPLACE;
    rename(2) would silently replace the empty directory)."""
    leaf = root / "leaf"
    make_leaf(str(leaf), [str(root)], gid=os.getegid(), trusted=ME)
    first = os.lstat(leaf).st_ino
    looks = []
    real = hostpaths._lstat_at

    def first_look_finds_nothing(fd, name):  # as if the other request had not renamed its leaf yet
        looks.append(name)
        return None if len(looks) == 1 else real(fd, name)

    monkeypatch.setattr(hostpaths, "_lstat_at", first_look_finds_nothing)
    assert not make_leaf(str(leaf), [str(root)], gid=os.getegid(), trusted=ME)
    assert os.lstat(leaf).st_ino == first and _temporaries(root) == []
    assert len(looks) == 2  # the rename found it, then it was checked as an existing leaf


def test_without_rename_noreplace_the_leaf_is_made_in_place(root, monkeypatch):
    def unsupported(dir_fd, source, target):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(hostpaths, "_rename_noreplace", unsupported)
    assert make_leaf(str(root / "leaf"), [str(root)], gid=os.getegid(), trusted=ME)
    assert stat.S_IMODE(os.lstat(root / "leaf").st_mode) == LEAF_MODE and _temporaries(root) == []


def test_missing_directories_counts_what_making_a_path_would_create(root):
    assert missing_directories(str(root / "a" / "b" / "c"), [str(root)]) == 3
    (root / "a").mkdir()
    assert missing_directories(str(root / "a" / "b" / "c"), [str(root)]) == 2
    assert missing_directories(str(root / "a"), [str(root)]) == 0


def test_make_leaf_never_creates_through_a_planted_link(root):
    make_leaf(str(root / "leaf"), [str(root)], gid=os.getegid(), trusted=ME)
    (root / "leaf" / "evil").symlink_to(root.parent)
    with pytest.raises(UnsafePath):
        make_leaf(str(root / "leaf" / "evil" / "x"), [str(root)], gid=os.getegid(), trusted=ME)
    assert not (root.parent / "x").exists()


def test_make_skeleton_makes_trusted_directories_and_keeps_existing_ones(root):
    target = root / "data" / "inputs"
    assert make_skeleton(str(target), [str(root)], ME)
    assert not make_skeleton(str(target), [str(root)], ME)
    assert stat.S_IMODE(os.lstat(target).st_mode) == 0o755
    assert not make_skeleton(str(target), [str(root)], ME, fresh=True)  # empty
    (target / "result.json").write_text("stale")
    with pytest.raises(LeafConflict, match="earlier attempt"):
        make_skeleton(str(target), [str(root)], ME, fresh=True)  # a root container's run directory
    assert (target / "result.json").exists()


def _temporaries(root) -> list[str]:
    return [str(p) for p in root.rglob(f"{TEMPORARY_PREFIX}*")]


def test_bind_sources_reads_binds_and_mounts_alike():
    host_config = {
        "Binds": ["/a:/x:ro", "named:/y", "/b:/z"],
        "Mounts": [{"Type": "bind", "Source": "/c", "Target": "/w"}, {"Type": "volume", "Source": "v"}],
    }
    assert [source for _, source in bind_sources(host_config)] == ["/a", "/b", "/c"]


def test_unsafe_bind_sources_lists_each_problem(root):
    (root / "link").symlink_to("/")
    problems = unsafe_bind_sources({"Binds": [f"{root}/link:/host"]}, [str(root)], ME)
    assert len(problems) == 1 and "HostConfig.Binds[0]" in problems[0] and "symlink" in problems[0]


def test_a_directory_bound_read_write_must_be_one_the_container_may_write(root):
    """The runtime makes mount points, as root, in what is mounted above them (an image's `/lib -> usr/lib`
    puts one inside a bind however targets are spelled): read-write only where the container writes anyway."""
    from dood.mounts.source_safety import unsafe_bind_sources

    theirs = root / "theirs"
    theirs.mkdir(mode=0o755)
    shared = root / "shared"
    shared.mkdir()
    os.chown(shared, os.geteuid(), 4242)
    os.chmod(shared, 0o2770)

    def problems(binds, uid=50000, gids=(0,)):
        return unsafe_bind_sources({"Binds": binds}, [str(root)], ME, identity=(uid, gids))

    assert problems([f"{theirs}:/w:ro"]) == []
    assert "bound read-write but uid 50000" in problems([f"{theirs}:/w"])[0]
    assert problems([f"{shared}:/w"], gids=(4242,)) == []  # a leaf of its group
    assert problems([f"{shared}:/w"], gids=(0,)) != []
    assert problems([f"{theirs}:/w"], uid=os.geteuid(), gids=(0,)) == []  # its owner
    mount = {"Type": "bind", "Source": str(theirs), "Target": "/w"}
    assert unsafe_bind_sources({"Mounts": [mount]}, [str(root)], ME, identity=(50000, (0,))) != []
    assert unsafe_bind_sources({"Mounts": [{**mount, "ReadOnly": True}]}, [str(root)], ME, identity=(50000, (0,))) == []
