"""Checkpoint directories: one per task instance (not per try), the same for every try on every host.

A step that saves its state as it goes (a training's epochs) resumes where an earlier try stopped when it
finds that state again. Its directory is therefore named after the *task instance*: stack, DAG, task, run
and map index, plus the instance's clear generation (`first_try`, below), never the try number:

    <root>/<stack>/<dag>.<task>-<hash of stack, dag, task>/run-<run>[-m<index>]-<hash of the instance>-f<first try>

`root` is a directory named `dood-checkpoints` (`check_root`: a client never names any other directory) that
every host running the task mounts (`<artifact_root>/dood-checkpoints` for a pipeline step, the operator's
`checkpoint_root`, default `<runs_root>/dood-checkpoints`), translated through the mount map like any bind
source; the rest is derived here, from the identity alone. Behind dood-proxy the *proxy* derives it
(`dood.proxy.directory_api`, `kind: checkpoint`) with its own stack: a client names a task instance, never a
checkpoint path, so no request reaches another stack's checkpoints, nor anything that is not a checkpoint
directory; and the proxy makes nothing below a `dood-checkpoints` directory but through `kind: checkpoint`.

- **Clears start from zero.** `first_try` is the first try number of the instance's current run-through:
  `max_tries - retries + 1`, as Airflow itself computes it (`get_first_reschedule_date`). A retry keeps it;
  a user's clear raises `max_tries` to `try_number + retries`, so the next try gets a new, empty directory.
- **Kept when a try fails; finished when the task succeeds** (`finish_checkpoint`): it is renamed
  `done-<ns>-run-...` and only the `keep` newest finished directories of the task are kept (`keep` 0: none).
  A live instance's name starts `run-`, a finished one's `done-`: neither can ever be taken for the other,
  whatever a run id holds. Directories of older generations of the same instance (a clear's leftovers) go too.
- **Removal never follows a link, and touches only checkpoint leaves**: the task directory is reached from
  `/` one name at a time with `O_NOFOLLOW | O_DIRECTORY` fds, each checked as `open_checkpoint` checks it;
  below it only a leaf open accepts (trusted owner, mode 2770, a group this process gives) is removed, with an
  explicit stack of directory fds (no recursion, however deep the tree), at most `MAX_REMOVED_ENTRIES`
  entries per finish. What this process may not remove (a subdirectory a step made without group write), or
  did not reach, is left, and said.

Pure path logic and the filesystem operations, shared by dood-proxy and the Airflow side holding the raw
socket; nothing here talks to Docker or Airflow.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dood.mounts.source_safety import (
    LEAF_MODE,
    LeafConflict,
    UnsafePath,
    can_give_group,
    covering_root,
    leaf_problems,
    make_leaf,
    trusted_uids,
)
from dood.policy.paths import clean_path

__all__ = [
    "CHECKPOINT_DIR_ENV",
    "CHECKPOINT_DIR_IN_CONTAINER",
    "CHECKPOINTS_DIR_NAME",
    "DONE_PREFIX",
    "INSTANCE_PREFIX",
    "MAX_REMOVED_ENTRIES",
    "MAX_RETENTION",
    "CheckpointKey",
    "Finished",
    "check_root",
    "checkpoint_path",
    "finish_checkpoint",
    "is_checkpoint_leaf",
    "first_try_of",
    "open_checkpoint",
]

CHECKPOINT_DIR_IN_CONTAINER = "/dood/checkpoint"
CHECKPOINT_DIR_ENV = "DOOD_CHECKPOINT_DIR"
#: The one name a checkpoint root has (`check_root`): a pipeline's checkpoints live in
#: `<artifact_root>/dood-checkpoints` (a pipeline's name holds no '-', so no pipeline's partitions are there),
#: the operator's default in `<runs_root>/dood-checkpoints`.
CHECKPOINTS_DIR_NAME = "dood-checkpoints"
#: A live instance's directory is `run-<run>[-m<index>]-<hash>-f<first try>`.
INSTANCE_PREFIX = "run-"
#: Finished checkpoints are renamed `done-<19 digits of nanoseconds>-run-...`: never a live instance's name.
DONE_PREFIX = "done-"
MAX_RETENTION = 100
#: The most entries one finish removes (files, links, directories): a step's tree of any size costs the proxy
#: bounded work per request; what is left goes with the task's next finish (said in `problems`).
MAX_REMOVED_ENTRIES = 100_000
#: The most directory fds open at once while removing; a deeper directory is first moved up to the leaf.
MAX_OPEN_DEPTH = 64
#: The largest map index or first try (Airflow keeps both as 32-bit integers): names stay under 128 chars.
MAX_NUMBER = 2**31 - 1
_DEEP_PREFIX = ".dood-deep-"
#: The longest DAG id, task id or run id accepted (Airflow's own limit is 250).
MAX_ID_CHARS = 250
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_TASK_DIGEST_BYTES = 10  # 80 bits: a task directory groups one task's instances; the instance's hash is 128
_INSTANCE_DIGEST_BYTES = 16
_RUN_SLUG_CHARS = 44
_INSTANCE = rf"run-[A-Za-z0-9_.-]{{1,{_RUN_SLUG_CHARS + 12}}}-[a-z2-7]{{26}}-f[1-9][0-9]{{0,9}}"
#: A finished checkpoint's name, as `finish_checkpoint` renames it (only dood-proxy writes a task directory).
_FINISHED = re.compile(r"done-[0-9]{19}-" + _INSTANCE)


@dataclass(frozen=True)
class CheckpointKey:
    """Which task instance (and clear generation) a checkpoint belongs to; the try is deliberately absent."""

    stack: str
    dag_id: str
    task_id: str
    run_id: str
    map_index: int = -1
    first_try: int = 1

    def __post_init__(self) -> None:
        for field in ("stack", "dag_id", "task_id", "run_id"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS or not value.isprintable():
                raise ValueError(f"{field} must be a printable string of 1 to {MAX_ID_CHARS} characters")
        if type(self.map_index) is not int or not -1 <= self.map_index <= MAX_NUMBER:
            raise ValueError(f"map_index must be an integer from -1 (not mapped) to {MAX_NUMBER}")
        if type(self.first_try) is not int or not 1 <= self.first_try <= MAX_NUMBER:
            raise ValueError(f"first_try must be an integer from 1 to {MAX_NUMBER}")

    @classmethod
    def from_request(cls, task: Any, stack: str) -> CheckpointKey:
        """The key a request names (`{"dag_id", "task_id", "run_id", "map_index", "first_try"}`), in `stack`
        (the proxy's own: never the client's). `ValueError` naming the field."""
        if not isinstance(task, Mapping):
            raise ValueError("task must be an object with dag_id, task_id, run_id, map_index and first_try")
        unknown = sorted(set(task) - {"dag_id", "task_id", "run_id", "map_index", "first_try"})
        if unknown:
            raise ValueError(f"task: unknown field(s) {unknown}")
        return cls(
            stack=stack,
            dag_id=task.get("dag_id"),  # type: ignore[arg-type]  # checked in __post_init__
            task_id=task.get("task_id"),  # type: ignore[arg-type]
            run_id=task.get("run_id"),  # type: ignore[arg-type]
            map_index=task.get("map_index", -1),
            first_try=task.get("first_try", 1),
        )

    def to_request(self) -> dict[str, Any]:
        """What a request to dood-proxy names (the stack is the proxy's)."""
        return {
            "dag_id": self.dag_id,
            "task_id": self.task_id,
            "run_id": self.run_id,
            "map_index": self.map_index,
            "first_try": self.first_try,
        }

    def task_dir_name(self) -> str:
        """`<dag>.<task>-<hash>`: every instance of one task (runs, map indexes) below it."""
        digest = _digest((self.stack, self.dag_id, self.task_id), _TASK_DIGEST_BYTES)
        return f"{_slug(self.dag_id, 48)}.{_slug(self.task_id, 48)}-{digest}"

    def instance_prefix(self) -> str:
        """What every clear generation of this instance's directory starts with."""
        digest = _digest(
            (self.stack, self.dag_id, self.task_id, self.run_id, str(self.map_index)), _INSTANCE_DIGEST_BYTES
        )
        index = f"-m{self.map_index}" if self.map_index >= 0 else ""
        return f"{INSTANCE_PREFIX}{_slug(self.run_id, _RUN_SLUG_CHARS)}{index}-{digest}-f"

    def instance_dir_name(self) -> str:
        return f"{self.instance_prefix()}{self.first_try}"


def first_try_of(try_number: int | None, max_tries: int | None, retries: int | None) -> int:
    """The first try number of the instance's current run-through (Airflow's own formula): a retry keeps it,
    a clear raises `max_tries` and so starts a new one. 1 when Airflow does not say."""
    if max_tries is None or max_tries < 0:
        return 1
    first = max_tries - int(retries or 0) + 1
    if try_number is not None and try_number >= 1:
        first = min(first, try_number)  # never after this try (a DAG whose retries grew since)
    return max(first, 1)


def checkpoint_path(root: str, key: CheckpointKey) -> str:
    """The checkpoint directory of `key` below `root` (both as the same side names them)."""
    return f"{root.rstrip('/')}/{_slug(key.stack, 63)}/{key.task_dir_name()}/{key.instance_dir_name()}"


def open_checkpoint(root: str, key: CheckpointKey, roots: Iterable[str], *, gid: int) -> tuple[str, bool]:
    """Make (or find) `key`'s checkpoint directory, a leaf of group `gid` (mode 2770): an existing one is
    reused as it is, whatever it holds (that is the point). Returns (path, made). `UnsafePath` for a root not
    named `dood-checkpoints` (`check_root`) or a way to it someone untrusted could change."""
    check_root(root)
    path = checkpoint_path(root, key)
    roots = list(roots)
    if make_leaf(path, roots, gid=gid, fresh=False):
        return path, True
    # make_leaf checked every directory above it: only trusted users change what is checked below
    info = os.lstat(path)
    if info.st_uid == os.geteuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        make_leaf(path, roots, gid=gid, fresh=True)  # an empty plain directory (a squatter's) becomes the leaf
        return path, False
    problems = leaf_problems(info, trusted_uids(), gid)
    if problems:
        raise LeafConflict(f"{path} exists but is not a checkpoint directory for group {gid}: {'; '.join(problems)}")
    return path, False


@dataclass(frozen=True)
class Finished:
    """What `finish_checkpoint` did: the directory kept (renamed), the ones removed, what could not go."""

    kept: str | None
    removed: tuple[str, ...]
    problems: tuple[str, ...]

    def to_answer(self) -> dict[str, Any]:
        return {"kept": self.kept, "removed": list(self.removed), "problems": list(self.problems)}


def finish_checkpoint(
    root: str,
    key: CheckpointKey,
    roots: Iterable[str],
    *,
    keep: int,
    trusted: frozenset[int] | None = None,
    group_ok: Callable[[int], bool] = can_give_group,
    clock: Callable[[], int] = time.time_ns,
    max_entries: int | None = None,
) -> Finished:
    """The task succeeded: keep its checkpoint as one of the task's `keep` newest finished ones, or remove it;
    remove older clear generations of the instance and finished checkpoints beyond `keep`.

    The task directory is reached from `/` one name at a time (`O_NOFOLLOW | O_DIRECTORY`, each directory
    checked on its open fd as `open_checkpoint` checks it: trusted owner, no group/other write below the root),
    and everything is removed below those fds: nothing a step plants (a link, a swapped directory) is ever
    followed. Only checkpoint leaves (`is_checkpoint_leaf`) named as this module names them are touched;
    anything else is left and said. At most `max_entries` (`MAX_REMOVED_ENTRIES`) entries are removed per
    call; what is left is said, and the next finish goes on. Never raises for what it could not remove (listed
    in `problems`); raises `UnsafePath` when the root or a directory on the way is not what open accepts
    (then nothing is touched)."""
    if type(keep) is not int or not 0 <= keep <= MAX_RETENTION:
        raise ValueError(f"keep must be an integer from 0 to {MAX_RETENTION}")
    check_root(root)
    trusted = trusted if trusted is not None else trusted_uids()
    limit = MAX_REMOVED_ENTRIES if max_entries is None else max_entries
    budget = [limit, limit]  # left, and the limit (for messages)
    task_dir = os.path.dirname(checkpoint_path(root, key))
    task_fd = _open_checked(task_dir, list(roots), trusted)
    if task_fd is None:
        return Finished(None, (), ())
    try:
        removed: list[str] = []
        problems: list[str] = []
        own = key.instance_dir_name()
        prefix = key.instance_prefix()
        names = os.listdir(task_fd)
        for name in names:  # older clear generations of this instance: a clear's leftovers
            generation = name[len(prefix) :]
            if name != own and name.startswith(prefix) and generation.isdigit() and int(generation) < key.first_try:
                _remove(task_fd, task_dir, name, trusted, group_ok, budget, removed, problems)
        finished = None
        if own in names:  # finished first (renamed), then removed if beyond `keep`: a removal cut short goes on
            problem = _leaf_problem(task_fd, own, trusted, group_ok)  # with the task's next finish
            if problem:
                problems.append(f"{task_dir}/{own}: {problem}; left")
            else:
                finished = f"{DONE_PREFIX}{clock():019d}-{own}"
                os.rename(own, finished, src_dir_fd=task_fd, dst_dir_fd=task_fd)
        done = sorted(name for name in os.listdir(task_fd) if _FINISHED.fullmatch(name))
        for name in done[: max(len(done) - keep, 0)]:
            shown = f"{task_dir}/{own}" if name == finished else f"{task_dir}/{name}"
            _remove(task_fd, task_dir, name, trusted, group_ok, budget, removed, problems, shown=shown)
        kept = finished if finished and keep else None
        return Finished(f"{task_dir}/{kept}" if kept else None, tuple(removed), tuple(problems))
    finally:
        os.close(task_fd)


def check_root(root: str) -> None:
    """`UnsafePath` unless `root` is an absolute, clean path whose last name is `dood-checkpoints`: a client
    names where checkpoints live, never an arbitrary directory (a model directory, a run directory)."""
    if not isinstance(root, str) or not root.startswith("/") or clean_path(root) != root.rstrip("/"):
        raise UnsafePath(f"checkpoint root {root!r} must be an absolute, clean path (no '..', '.', '//')")
    if os.path.basename(root.rstrip("/")) != CHECKPOINTS_DIR_NAME:
        raise UnsafePath(
            f"checkpoint root {root!r} must be a directory named {CHECKPOINTS_DIR_NAME!r} (e.g. "
            f"<runs_root>/{CHECKPOINTS_DIR_NAME}, <artifact_root>/{CHECKPOINTS_DIR_NAME}); checkpoints are made "
            "and removed only there"
        )
    if CHECKPOINTS_DIR_NAME in root.rstrip("/").split("/")[:-1]:
        raise UnsafePath(
            f"checkpoint root {root!r} lies inside another {CHECKPOINTS_DIR_NAME!r} tree: a checkpoint tree is made "
            "only in the layout the proxy derives, never nested in one"
        )


def is_checkpoint_leaf(info: os.stat_result, trusted: frozenset[int], group_ok: Callable[[int], bool]) -> bool:
    """What `open_checkpoint` makes and accepts: a real directory of a trusted owner, mode 2770, of a group
    this process gives."""
    return _leaf_problem_of(info, trusted, group_ok) is None


def _leaf_problem_of(info: os.stat_result, trusted: frozenset[int], group_ok: Callable[[int], bool]) -> str | None:
    if not stat.S_ISDIR(info.st_mode):
        return "not a directory"
    problems = []
    if info.st_uid not in trusted:
        problems.append(f"owned by uid {info.st_uid}")
    if stat.S_IMODE(info.st_mode) != LEAF_MODE:
        problems.append(f"mode {stat.S_IMODE(info.st_mode):o}, not {LEAF_MODE:o}")
    if not group_ok(info.st_gid):
        problems.append(f"group {info.st_gid}, not one this process gives")
    return f"not a checkpoint directory ({', '.join(problems)})" if problems else None


def _leaf_problem(dir_fd: int, name: str, trusted: frozenset[int], group_ok: Callable[[int], bool]) -> str | None:
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return "gone"
    return _leaf_problem_of(info, trusted, group_ok)


def _open_checked(path: str, roots: list[str], trusted: frozenset[int]) -> int | None:
    """An fd of the directory `path`, reached from `/` one name at a time, never through a link, each directory
    checked on its fd as `hostpaths` checks the way to a bind source (trusted owner; no group/other write,
    save a sticky one above the root). None when a directory on the way does not exist."""
    clean = clean_path(path)
    root = covering_root(clean, roots)
    if root is None or clean == root:
        raise UnsafePath(f"{path} lies under none of the allowed roots {sorted(roots)}")
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    current = ""
    try:
        for name in clean.strip("/").split("/"):
            current = f"{current}/{name}"
            try:
                child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                os.close(fd)
                return None
            except OSError as exc:  # ELOOP: a link; ENOTDIR: not a directory
                raise UnsafePath(f"{current} is not a real directory ({exc.strerror}); nothing was removed") from None
            os.close(fd)
            fd = child
            info = os.fstat(fd)
            above_root = len(current) < len(root.rstrip("/") or "/")
            if info.st_uid not in trusted:
                raise UnsafePath(f"{current} is owned by uid {info.st_uid}, not {sorted(trusted)}; nothing was removed")
            if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not (above_root and info.st_mode & stat.S_ISVTX):
                raise UnsafePath(
                    f"{current} is writable by group or others ({stat.filemode(info.st_mode)}): not a directory only "
                    "a trusted user writes; nothing was removed"
                )
    except BaseException:
        os.close(fd)
        raise
    return fd


def _remove(
    parent_fd: int,
    parent: str,
    name: str,
    trusted: frozenset[int],
    group_ok: Callable[[int], bool],
    budget: list[int],
    removed: list[str],
    problems: list[str],
    *,
    shown: str | None = None,
) -> None:
    """Remove the checkpoint leaf `name` below `parent_fd` and everything in it, never following a link, with
    an explicit stack of directory fds (no recursion, at most `MAX_OPEN_DEPTH` open: a deeper directory is
    moved up to the leaf first), at most `budget[0]` entries. Anything else at `name` is left and said.
    `shown`: how the answer names it (the instance's own path for the checkpoint just finished)."""
    path = shown or f"{parent}/{name}"
    try:
        top = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
    except FileNotFoundError:
        return
    except OSError as exc:
        problems.append(f"{path} is not a real directory ({exc.strerror}); left")
        return
    failures: list[str] = []
    finished = False
    try:
        problem = _leaf_problem_of(os.fstat(top), trusted, group_ok)  # checked on the fd that is removed below
        if problem:
            problems.append(f"{path}: {problem}; left")
            return
        finished = _empty_tree(top, path, budget, failures)
    finally:
        os.close(top)
    if finished and not failures:
        try:
            os.rmdir(name, dir_fd=parent_fd)
        except FileNotFoundError:
            return  # another finish of the task removed it meanwhile (it says so)
        except OSError as exc:
            failures.append(f"{path}: {exc.strerror}")
    if not finished:
        problems.append(
            f"{path}: not removed whole: one finish removes at most {budget[1]} entries; what is left goes with "
            "the next finish of this task"
        )
    elif failures:
        problems.append(
            f"{path}: could not remove {failures[0]}" + (f" (+{len(failures) - 1})" if failures[1:] else "")
        )
    else:
        removed.append(path)


def _empty_tree(top: int, path: str, budget: list[int], failures: list[str]) -> bool:
    """Remove everything below the directory fd `top`; False when the budget ran out first."""
    try:
        listed = os.listdir(top)
    except FileNotFoundError:  # another finish of the task removed it meanwhile
        return True
    stack: list[tuple[int, str, list[str]]] = [(top, path, listed)]
    try:
        while stack:
            fd, where, names = stack[-1]
            if not names:
                stack.pop()
                if stack:  # `top` itself is closed and removed by the caller
                    os.close(fd)
                    try:
                        os.rmdir(os.path.basename(where), dir_fd=stack[-1][0])
                    except FileNotFoundError:
                        pass  # another finish of the task removing it too
                    except OSError as exc:
                        failures.append(f"{where}: {exc.strerror}")
                continue
            if budget[0] <= 0:
                return False
            budget[0] -= 1
            name = names.pop()
            try:
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as exc:
                failures.append(f"{where}/{name}: {exc.strerror}")
                continue
            if not stat.S_ISDIR(info.st_mode):
                try:
                    os.unlink(name, dir_fd=fd)  # a link is removed, never followed
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    failures.append(f"{where}/{name}: {exc.strerror}")
                continue
            if len(stack) >= MAX_OPEN_DEPTH:  # move it up to the leaf: no more fds open, whatever the depth
                moved = f"{_DEEP_PREFIX}{secrets.token_hex(8)}"
                try:
                    os.rename(name, moved, src_dir_fd=fd, dst_dir_fd=top)
                    stack[0][2].append(moved)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    failures.append(f"{where}/{name}: {exc.strerror}")
                continue
            try:
                child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                continue
            except OSError as exc:  # swapped for a link meanwhile, or not ours to read
                failures.append(f"{where}/{name}: {exc.strerror}")
                continue
            try:
                listed = os.listdir(child)
            except FileNotFoundError:  # removed meanwhile (its fd still lists it: an empty, unlinked directory)
                os.close(child)
                continue
            except OSError as exc:
                os.close(child)
                failures.append(f"{where}/{name}: {exc.strerror}")
                continue
            stack.append((child, f"{where}/{name}", listed))
        return True
    finally:
        for fd, _, _ in stack[1:]:
            os.close(fd)


def _digest(parts: Iterable[str], size: int) -> str:
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()[:size]
    return base64.b32encode(digest).decode().rstrip("=").lower()


def _slug(text: str, limit: int) -> str:
    """A readable, lossy part of a name: `A-Z a-z 0-9 _ . -`, starting and ending with a letter or digit."""
    return _UNSAFE.sub("-", text)[:limit].strip("-_.") or "x"
