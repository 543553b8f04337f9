"""dood.hostpaths on a real filesystem: which bind sources someone untrusted could re-point, and leaves."""

from __future__ import annotations

import os
import stat

import pytest

from dood.hostpaths import (
    LEAF_MODE,
    UnsafePath,
    bind_sources,
    check_bind_source,
    make_leaf,
    make_skeleton,
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
    check_bind_source(str(root / "work" / "missing-leaf"), [str(root)], ME)  # the daemon makes it, as root


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
    assert make_leaf(str(leaf), [str(root)], gid=STRANGER, clear=["result.json"])
    info = os.lstat(leaf)
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, STRANGER, LEAF_MODE)
    assert os.lstat(root / "artifacts").st_uid == 0 and stat.S_IMODE(os.lstat(root / "artifacts").st_mode) == 0o755
    (leaf / "result.json").write_text("stale")
    assert not make_leaf(str(leaf), [str(root)], gid=STRANGER + 7, clear=["result.json"])
    assert os.lstat(leaf).st_gid == STRANGER  # an existing leaf is kept as it is
    assert not (leaf / "result.json").exists()


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
