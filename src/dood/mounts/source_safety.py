"""Bind sources nobody untrusted can re-point: every directory of the path checked, and leaves made safely.

The daemon resolves a bind source when the container *starts*, following symlinks as root. Checking the
path string at create time proves nothing if someone untrusted can change one of its components later
(swap a directory for a symlink to `/`). So a bind source is accepted only when every directory from `/`
down to its parent is a real directory (lstat: no symlink), owned by a trusted uid (root, or the checking
process's own), and writable by nobody else (no group/other write; a sticky directory such as `/tmp` is
fine above the allowed root, its entries being trusted-owned). The source itself must not be a symlink.

Launched containers run as non-root users without new privileges (the policy) and Airflow's task code
runs as its own non-root user, so none of them can change a checked component: the check still holds
when the daemon mounts, with nothing to race. Containers and tasks write only inside *leaf* directories
made for them (`make_leaf`: a run directory, a run's partition, a model directory; writable through their
group), whose own entry sits in a trusted directory; a path *below* a leaf is never bindable, because the
leaf is group-writable.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import itertools
import os
import secrets
import stat
from collections.abc import Iterable, Mapping
from typing import Any

from dood.policy.model import MAX_ID
from dood.policy.paths import clean_path

#: Mode of a leaf made for a container: its (trusted) owner and the container's group write; new files
#: and directories inside keep that group (setgid).
LEAF_MODE = 0o2770
#: Mode of a directory made on the way to a leaf: only its trusted owner writes.
SKELETON_MODE = 0o755
#: Name prefix of a leaf being made, before it is renamed into place whole (`make_leaf`).
TEMPORARY_PREFIX = ".dood-new-"
_RENAME_NOREPLACE = 1  # renameat2 flag, linux/fs.h


class UnsafePath(ValueError):
    """A path whose directory chain someone untrusted could change (or that cannot be made safely)."""


class LeafConflict(ValueError):
    """An entry exists where a directory was asked for, and it is not what was asked (not a directory, or,
    for a fresh run directory, not an empty leaf of the container's group)."""


def trusted_uids() -> frozenset[int]:
    """Who may own a directory on the way to a bind source: root and this process's own user."""
    return frozenset({0, os.geteuid()})


def covering_root(path: str, roots: Iterable[str]) -> str | None:
    """The longest of `roots` that is `path` or lies above it."""
    matches = [r for r in roots if r == "/" or path == r or path.startswith(r.rstrip("/") + "/")]
    return max(matches, key=len) if matches else None


def check_bind_source(path: str, roots: Iterable[str], trusted: frozenset[int] | None = None) -> None:
    """Raise `UnsafePath` unless no untrusted party can change any component of `path` (see module doc).

    The source must exist: the daemon would create a missing one, as root, wherever the path says (a new
    entry in a read-only root, in a champion's directory), which is writing for whoever asked.
    """
    trusted = trusted if trusted is not None else trusted_uids()
    clean = clean_path(path)
    _walk_parents(clean, _root_of(clean, path, roots), trusted, create=False)
    _check_last(clean, trusted)


def _root_of(clean: str, path: str, roots: Iterable[str]) -> str:
    roots = list(roots)
    root = covering_root(clean, roots)
    if root is None:
        raise UnsafePath(f"{path!r} lies under none of the allowed roots {sorted(roots)}")
    return root


def _walk_parents(clean: str, root: str, trusted: frozenset[int], *, create: bool) -> None:
    """Check every directory from `/` down to the parent of `clean`, each before descending into it;
    with `create`, missing ones from the root down are made first (by this trusted process)."""
    parts = clean.strip("/").split("/") if clean != "/" else []
    current = ""
    for name in parts[:-1]:
        current = f"{current}/{name}"
        inside = len(current) >= len(root)
        if create and inside:
            with contextlib.suppress(FileExistsError):
                os.mkdir(current, SKELETON_MODE)
        _check_directory(current, trusted, above_root=not inside)


def _check_directory(path: str, trusted: frozenset[int], *, above_root: bool) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise UnsafePath(f"{path} does not exist") from None
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePath(f"{path} is a symlink; every directory of a bind source must be a real directory")
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePath(f"{path} is not a directory")
    if info.st_uid not in trusted:
        raise UnsafePath(
            f"{path} is owned by uid {info.st_uid}, which may change it (replace an entry with a symlink); "
            f"directories above a bind source must be owned by {sorted(trusted)}. Bind the directory made for "
            "the run itself, not a path below it"
        )
    writable_by_others = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    sticky = info.st_mode & stat.S_ISVTX
    if writable_by_others and not (above_root and sticky):
        raise UnsafePath(
            f"{path} is writable by group or others ({stat.filemode(info.st_mode)}); directories above a "
            f"bind source must be writable by their owner only (chmod go-w {path})"
        )


def _check_last(path: str, trusted: frozenset[int]) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise UnsafePath(
            f"{path} does not exist: the daemon would create it, as root; make it first (a run's directories are "
            "made through dood-proxy's directories endpoint)"
        ) from None
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePath(f"{path} is a symlink; a bind source must be the real directory or file")
    if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
        raise UnsafePath(f"{path} is neither a directory nor a regular file (a socket or device is never bound)")


def can_give_group(gid: int) -> bool:
    """Whether this process may hand a directory it owns to group `gid` (root, or one of its own groups):
    checked before anything is made, so a leaf is never left half-made by a refused `fchown`."""
    return os.geteuid() == 0 or gid == os.getegid() or gid in os.getgroups()


def make_leaf(
    path: str,
    roots: Iterable[str],
    *,
    gid: int,
    fresh: bool = False,
    trusted: frozenset[int] | None = None,
) -> bool:
    """Make `path` a directory a container whose group is `gid` writes (a leaf); True if it was made.

    The leaf is this trusted process's own, shared with the group (mode 2770), so it can be bound itself,
    but, being group-writable, never serves as a directory above another bind source. Missing directories
    between the root and the leaf are made trusted-owned (0755). The leaf appears whole or not at all: it
    is made under a temporary name, given its group and mode, then renamed into place (never over an
    entry that appeared meanwhile). An existing directory is kept as it is (never re-owned, nothing in it
    removed); with `fresh` (a run directory, one per try) it must be an empty leaf of group `gid`, else
    `LeafConflict`: what an earlier attempt left there is never taken for this one's.
    """
    trusted = trusted if trusted is not None else trusted_uids()
    if not 0 <= gid <= MAX_ID:
        raise ValueError(f"gid {gid} is outside 0..{MAX_ID}")
    clean = clean_path(path)
    root = _root_of(clean, path, roots)
    if clean == root:
        raise UnsafePath(f"{path!r} is an allowed root itself; a leaf must lie below one")
    if not can_give_group(gid):
        raise UnsafePath(
            f"this process (uid {os.geteuid()}, groups {sorted({os.getegid(), *os.getgroups()})}) cannot give a "
            f"directory to group {gid}; a leaf's group must be one of its groups"
        )
    _walk_parents(clean, root, trusted, create=True)
    parent, name = os.path.split(clean)
    parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        made = _lstat_at(parent_fd, name) is None and _new_leaf(parent_fd, name, gid)
        if not made:
            _check_existing(parent_fd, name, clean, trusted, gid=gid, fresh=fresh)
    finally:
        os.close(parent_fd)
    return made


def make_skeleton(
    path: str, roots: Iterable[str], trusted: frozenset[int] | None = None, *, fresh: bool = False
) -> bool:
    """Make `path` (and what is missing between its root and it) a directory only this trusted process
    writes, e.g. an input directory that containers read; True if it was made. An existing one is checked;
    with `fresh` (the run directory of a root container) it must be empty, else `LeafConflict`."""
    trusted = trusted if trusted is not None else trusted_uids()
    clean = clean_path(path)
    existed = os.path.lexists(clean)
    _walk_parents(f"{clean}/-", _root_of(clean, path, roots), trusted, create=True)
    if existed and fresh:
        parent, name = os.path.split(clean)
        parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            _check_empty(parent_fd, name, clean)
        finally:
            os.close(parent_fd)
    return not existed


def missing_directories(path: str, roots: Iterable[str]) -> int:
    """How many directories making `path` would create below its root (0: it exists already)."""
    clean = clean_path(path)
    root = _root_of(clean, path, roots)
    count, current = 0, clean
    while len(current) > len(root) and not os.path.lexists(current):
        count += 1
        current = os.path.dirname(current)
    return count


def _lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _new_leaf(parent_fd: int, name: str, gid: int) -> bool:
    """Make the leaf `name` in `parent_fd` whole under a temporary name, then move it into place; False when
    an entry of that name appeared meanwhile (then nothing of ours is left)."""
    temporary = f"{TEMPORARY_PREFIX}{secrets.token_hex(8)}"
    _make_shared(parent_fd, temporary, gid)
    try:
        _rename_noreplace(parent_fd, temporary, name)
    except FileExistsError:
        os.rmdir(temporary, dir_fd=parent_fd)
        return False
    except OSError as exc:
        os.rmdir(temporary, dir_fd=parent_fd)
        if exc.errno not in (errno.EINVAL, errno.ENOSYS):
            raise
        # A filesystem without RENAME_NOREPLACE (NFS): make it in place. Its group is known to be ours to
        # give, so it is whole a moment later; a request racing that moment sees mode 0700 (refused if fresh).
        try:
            _make_shared(parent_fd, name, gid)
        except FileExistsError:
            return False
    return True


def _make_shared(parent_fd: int, name: str, gid: int) -> None:
    """mkdir `name` 0700, then give it to group `gid` with LEAF_MODE; removed again if that fails."""
    os.mkdir(name, 0o700, dir_fd=parent_fd)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
        try:
            os.fchown(fd, -1, gid)
            os.fchmod(fd, LEAF_MODE)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.rmdir(name, dir_fd=parent_fd)
        raise


def _rename_noreplace(dir_fd: int, source: str, target: str) -> None:
    """renameat2(RENAME_NOREPLACE): FileExistsError when `target` exists, where rename(2) would silently
    replace an empty directory (another request's fresh leaf). Linux 3.15+, glibc 2.28+."""
    renameat2 = getattr(_libc(), "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not in this C library", target)
    if renameat2(dir_fd, source.encode(), dir_fd, target.encode(), _RENAME_NOREPLACE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), target)


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check_existing(parent_fd: int, name: str, path: str, trusted: frozenset[int], *, gid: int, fresh: bool) -> None:
    info = _lstat_at(parent_fd, name)
    if info is None:
        raise LeafConflict(f"{path} vanished while it was being prepared; ask again")
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePath(f"{path} is a symlink; a bind source must be the real directory or file")
    if not stat.S_ISDIR(info.st_mode):
        raise LeafConflict(f"{path} exists and is not a directory; remove it or choose another path")
    if not fresh:
        return  # kept as it is
    if info.st_uid == os.geteuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        _skeleton_to_leaf(parent_fd, name, path, gid)  # an empty directory only we write: nobody's output
        return
    problems = leaf_problems(info, trusted, gid)
    if problems:
        raise LeafConflict(f"{path} exists but is not a fresh leaf for group {gid}: {'; '.join(problems)}")
    _check_empty(parent_fd, name, path)


def leaf_problems(info: os.stat_result, trusted: Iterable[int], gid: int) -> list[str]:
    """Why an existing directory is not a leaf of group `gid` (a trusted owner, that group, mode 2770); none
    when it is one. Shared by fresh leaves and checkpoint directories."""
    trusted = sorted(trusted)
    problems = []
    if info.st_uid not in trusted:
        problems.append(f"it is owned by uid {info.st_uid}, not by {trusted}")
    if info.st_gid != gid:
        problems.append(f"its group is {info.st_gid}, not {gid}")
    if stat.S_IMODE(info.st_mode) != LEAF_MODE:
        problems.append(f"its mode is {stat.S_IMODE(info.st_mode):o}, not {LEAF_MODE:o}")
    return problems


def _skeleton_to_leaf(parent_fd: int, name: str, path: str, gid: int) -> None:
    """Make an empty directory only this process writes (a skeleton asked for where a run directory will be:
    one client squatting another stack's next run directory) the fresh leaf asked for. Nobody else can have
    put anything in it, so nothing can appear between the check and the change."""
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
    try:
        with os.scandir(fd) as entries:
            if next(iter(entries), None) is not None:
                raise LeafConflict(f"{path} exists and is not empty; it is never reused for a new try")
        os.fchown(fd, -1, gid)
        os.fchmod(fd, LEAF_MODE)
    finally:
        os.close(fd)


def _check_empty(parent_fd: int, name: str, path: str) -> None:
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
    try:
        with os.scandir(fd) as entries:
            names = [entry.name for entry in itertools.islice(entries, 4)]
    finally:
        os.close(fd)
    if names:
        shown = ", ".join(repr(n[:64]) for n in names[:3])
        raise LeafConflict(
            f"{path} already holds what an earlier attempt with the same name left ({shown}"
            f"{', ...' if len(names) > 3 else ''}); it is never reused, so that attempt's result cannot be taken "
            "for this one's. A new try (clear the task, or let it retry) gets a directory of its own"
        )


def bind_sources(host_config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """`(field, host path)` of every bind mount in a create body's (or an inspect's) HostConfig."""
    found: list[tuple[str, str]] = []
    for index, bind in enumerate(host_config.get("Binds") or []):
        source = bind.split(":", 1)[0] if isinstance(bind, str) else ""
        if source.startswith("/"):
            found.append((f"HostConfig.Binds[{index}]", source))
    for index, mount in enumerate(host_config.get("Mounts") or []):
        if isinstance(mount, Mapping) and mount.get("Type") == "bind" and isinstance(mount.get("Source"), str):
            found.append((f"HostConfig.Mounts[{index}].Source", mount["Source"]))
    return found


def read_write_directory_binds(host_config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """`(field, host path)` of the binds mounted read-write (the runtime, as root, makes mount points in them)."""
    found: list[tuple[str, str]] = []
    for index, bind in enumerate(host_config.get("Binds") or []):
        parts = bind.split(":") if isinstance(bind, str) else []
        if len(parts) >= 2 and parts[0].startswith("/") and "ro" not in (parts[2] if len(parts) > 2 else "").split(","):
            found.append((f"HostConfig.Binds[{index}]", parts[0]))
    for index, mount in enumerate(host_config.get("Mounts") or []):
        if isinstance(mount, Mapping) and mount.get("Type") == "bind" and not mount.get("ReadOnly"):
            if isinstance(mount.get("Source"), str):
                found.append((f"HostConfig.Mounts[{index}].Source", mount["Source"]))
    return found


def writable_by(info: os.stat_result, uid: int, gids: Iterable[int]) -> bool:
    """Whether a process of `uid` with groups `gids` may write what `info` describes (no capabilities)."""
    if info.st_uid == uid:
        return bool(info.st_mode & stat.S_IWUSR)
    if info.st_gid in set(gids):
        return bool(info.st_mode & stat.S_IWGRP)
    return bool(info.st_mode & stat.S_IWOTH)


def unsafe_bind_sources(
    host_config: Mapping[str, Any],
    roots: Iterable[str],
    trusted: frozenset[int] | None = None,
    *,
    identity: tuple[int, tuple[int, ...]] | None = None,
) -> list[str]:
    """Why each bind source of `host_config` could be re-pointed by someone untrusted (empty: none can).

    With `identity` (the container's uid and groups): a directory bound read-write must be one that identity
    may write itself. The runtime makes missing mount points, as root, inside what is mounted above them, and
    an image's symlinks (`/lib -> usr/lib`) can put a mount point inside a bind however the targets are
    spelled; in a directory the container may write anyway, that gives it nothing. Bind the others read-only
    (then the runtime's mkdir fails: read-only file system)."""
    problems = []
    for field, source in bind_sources(host_config):
        try:
            check_bind_source(source, roots, trusted)
        except UnsafePath as exc:
            problems.append(f"{field}: {exc}")
    if identity is None:
        return problems
    uid, gids = identity
    for field, source in read_write_directory_binds(host_config):
        try:
            info = os.lstat(clean_path(source))
        except OSError:
            continue  # said above
        if stat.S_ISDIR(info.st_mode) and not writable_by(info, uid, gids):
            problems.append(
                f"{field}: {source} is bound read-write but uid {uid} (groups {sorted(set(gids))}) may not write it: "
                "the runtime would make mount points in it as root; bind it read-only (':ro'), or bind a directory "
                "made for the container (a leaf)"
            )
    return problems
