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
import errno
import os
import stat
from collections.abc import Iterable, Mapping
from typing import Any

from dood.policy.paths import clean_path

#: Mode of a leaf made for a container: its (trusted) owner and the container's group write; new files
#: and directories inside keep that group (setgid).
LEAF_MODE = 0o2770
#: Mode of a directory made on the way to a leaf: only its trusted owner writes.
SKELETON_MODE = 0o755


class UnsafePath(ValueError):
    """A path whose directory chain someone untrusted could change (or that cannot be made safely)."""


def trusted_uids() -> frozenset[int]:
    """Who may own a directory on the way to a bind source: root and this process's own user."""
    return frozenset({0, os.geteuid()})


def covering_root(path: str, roots: Iterable[str]) -> str | None:
    """The longest of `roots` that is `path` or lies above it."""
    matches = [r for r in roots if r == "/" or path == r or path.startswith(r.rstrip("/") + "/")]
    return max(matches, key=len) if matches else None


def check_bind_source(path: str, roots: Iterable[str], trusted: frozenset[int] | None = None) -> None:
    """Raise `UnsafePath` unless no untrusted party can change any component of `path` (see module doc).

    A missing last component is fine (the daemon creates it, as root, in a directory only trusted users
    write); a missing directory above it is not.
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
        return
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePath(f"{path} is a symlink; a bind source must be the real directory or file")
    if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
        raise UnsafePath(f"{path} is neither a directory nor a regular file (a socket or device is never bound)")


def make_leaf(
    path: str,
    roots: Iterable[str],
    *,
    gid: int,
    clear: Iterable[str] = (),
    trusted: frozenset[int] | None = None,
) -> bool:
    """Make `path` a directory a container whose group is `gid` writes (a leaf); True if it was made.

    The leaf is this trusted process's own, shared with the group (mode 2770), so it can be bound itself,
    but, being group-writable, never serves as a directory above another bind source. Missing directories
    between the root and the leaf are made trusted-owned (0755). An existing leaf is kept as it is (never
    re-owned); names in `clear` (a stale result file) are removed from it without following links.
    """
    trusted = trusted if trusted is not None else trusted_uids()
    clean = clean_path(path)
    root = _root_of(clean, path, roots)
    if clean == root:
        raise UnsafePath(f"{path!r} is an allowed root itself; a leaf must lie below one")
    _walk_parents(clean, root, trusted, create=True)
    _check_last(clean, trusted)
    made = False
    try:
        os.mkdir(clean, 0o700)
        made = True
    except FileExistsError:
        pass
    fd = os.open(clean, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        if made:
            os.fchown(fd, -1, gid)
            os.fchmod(fd, LEAF_MODE)
        for name in clear:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=fd)
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            raise UnsafePath(f"cannot prepare {clean} for group {gid} ({exc.strerror})") from None
        raise
    finally:
        os.close(fd)
    return made


def make_skeleton(path: str, roots: Iterable[str], trusted: frozenset[int] | None = None) -> bool:
    """Make `path` (and what is missing between its root and it) a directory only this trusted process
    writes, e.g. an input directory that containers read; True if it was made. An existing one is checked."""
    trusted = trusted if trusted is not None else trusted_uids()
    clean = clean_path(path)
    existed = os.path.lexists(clean)
    _walk_parents(f"{clean}/-", _root_of(clean, path, roots), trusted, create=True)
    return not existed


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


def unsafe_bind_sources(
    host_config: Mapping[str, Any], roots: Iterable[str], trusted: frozenset[int] | None = None
) -> list[str]:
    """Why each bind source of `host_config` could be re-pointed by someone untrusted (empty: none can)."""
    problems = []
    for field, source in bind_sources(host_config):
        try:
            check_bind_source(source, roots, trusted)
        except UnsafePath as exc:
            problems.append(f"{field}: {exc}")
    return problems
