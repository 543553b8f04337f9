"""Checkpoint directories: one per task instance (not per try), the same for every try on every host.

A step that saves its state as it goes (a training's epochs) resumes where an earlier try stopped when it
finds that state again. Its directory is therefore named after the *task instance*: stack, DAG, task, run
and map index, plus the instance's clear generation (`first_try`, below), never the try number:

    <root>/<stack>/<dag>.<task>-<hash of stack, dag, task>/<run>[-m<index>]-<hash of the instance>-f<first try>

`root` is a directory every host running the task mounts (the pipeline's `artifact_root`, or the operator's
`checkpoint_root`), translated through the mount map like any bind source; the rest is derived here, from
the identity alone. Behind dood-proxy the *proxy* derives it (`dood.proxy.directories`, `kind: checkpoint`)
with its own stack: a client names a task instance, never a checkpoint path, so no request reaches another
stack's checkpoints, nor anything that is not a checkpoint directory.

- **Clears start from zero.** `first_try` is the first try number of the instance's current run-through:
  `max_tries - retries + 1`, as Airflow itself computes it (`get_first_reschedule_date`). A retry keeps it;
  a user's clear raises `max_tries` to `try_number + retries`, so the next try gets a new, empty directory.
- **Kept when a try fails; finished when the task succeeds** (`finish_checkpoint`): with `keep` 0 it is
  removed; else it is renamed `done-<ns>-<name>` and only the `keep` newest finished directories of the task
  are kept. Directories of older generations of the same instance (a clear's leftovers) go too.
- **Removal never follows a link**: entries are removed below a directory opened with `O_NOFOLLOW`, with
  `shutil.rmtree(dir_fd=...)` (fd-based, symlink-safe); what this process may not remove (a subdirectory a
  step made without group write) is left, and said.

Pure path logic and the filesystem operations, shared by dood-proxy and the Airflow side holding the raw
socket; nothing here talks to Docker or Airflow.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import stat
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dood.hostpaths import LEAF_MODE, LeafConflict, UnsafePath, make_leaf, trusted_uids

__all__ = [
    "CHECKPOINT_DIR_ENV",
    "CHECKPOINT_DIR_IN_CONTAINER",
    "CHECKPOINTS_DIR_NAME",
    "DONE_PREFIX",
    "MAX_RETENTION",
    "CheckpointKey",
    "Finished",
    "checkpoint_path",
    "finish_checkpoint",
    "first_try_of",
    "open_checkpoint",
]

CHECKPOINT_DIR_IN_CONTAINER = "/dood/checkpoint"
CHECKPOINT_DIR_ENV = "DOOD_CHECKPOINT_DIR"
#: A pipeline's checkpoints live in `<artifact_root>/dood-checkpoints` (a pipeline's name holds no '-', so no
#: pipeline's partitions are there).
CHECKPOINTS_DIR_NAME = "dood-checkpoints"
#: Finished checkpoints kept by `checkpoint_retention` are renamed `done-<nanoseconds>-<name>`.
DONE_PREFIX = "done-"
MAX_RETENTION = 100
#: The longest DAG id, task id or run id accepted (Airflow's own limit is 250).
MAX_ID_CHARS = 250
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_TASK_DIGEST_BYTES = 10  # 80 bits: a task directory groups one task's instances; the instance's hash is 128
_INSTANCE_DIGEST_BYTES = 16


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
        if type(self.map_index) is not int or self.map_index < -1:
            raise ValueError("map_index must be an integer, -1 (not mapped) or more")
        if type(self.first_try) is not int or self.first_try < 1:
            raise ValueError("first_try must be an integer, 1 or more")

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
        return f"{_slug(self.run_id, 48)}{index}-{digest}-f"

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
    reused as it is, whatever it holds (that is the point). Returns (path, made)."""
    path = checkpoint_path(root, key)
    roots = list(roots)
    if make_leaf(path, roots, gid=gid, fresh=False):
        return path, True
    # make_leaf checked every directory above it: only trusted users change what is checked below
    info = os.lstat(path)
    if info.st_uid == os.geteuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        make_leaf(path, roots, gid=gid, fresh=True)  # an empty plain directory (a squatter's) becomes the leaf
        return path, False
    problems = []
    if info.st_uid not in trusted_uids():
        problems.append(f"it is owned by uid {info.st_uid}")
    if info.st_gid != gid:
        problems.append(f"its group is {info.st_gid}, not {gid}")
    if stat.S_IMODE(info.st_mode) != LEAF_MODE:
        problems.append(f"its mode is {stat.S_IMODE(info.st_mode):o}, not {LEAF_MODE:o}")
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
    root: str, key: CheckpointKey, *, keep: int, trusted: frozenset[int] | None = None, clock=time.time_ns
) -> Finished:
    """The task succeeded: keep its checkpoint as one of the task's `keep` newest finished ones, or remove it;
    remove older clear generations of the instance and finished checkpoints beyond `keep`. Never raises for
    what it could not remove (listed in `problems`); raises `UnsafePath` when the task's directory is not a
    plain directory of a trusted owner (then nothing is touched)."""
    if type(keep) is not int or not 0 <= keep <= MAX_RETENTION:
        raise ValueError(f"keep must be an integer from 0 to {MAX_RETENTION}")
    trusted = trusted if trusted is not None else trusted_uids()
    task_dir = os.path.dirname(checkpoint_path(root, key))
    try:
        task_fd = os.open(task_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return Finished(None, (), ())
    except OSError as exc:
        raise UnsafePath(f"{task_dir} cannot be opened as a plain directory ({exc.strerror})") from None
    try:
        info = os.fstat(task_fd)
        if info.st_uid not in trusted or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise UnsafePath(f"{task_dir} is not a directory only a trusted user writes; nothing was removed")
        removed: list[str] = []
        problems: list[str] = []
        kept = None
        own = key.instance_dir_name()
        prefix = key.instance_prefix()
        names = os.listdir(task_fd)
        for name in names:  # older clear generations of this instance: a clear's leftovers
            generation = name[len(prefix) :]
            if name != own and name.startswith(prefix) and generation.isdigit() and int(generation) < key.first_try:
                _remove(task_fd, task_dir, name, removed, problems)
        if own in names:
            if keep == 0:
                _remove(task_fd, task_dir, own, removed, problems)
            else:
                kept = f"{DONE_PREFIX}{clock():019d}-{own}"
                os.rename(own, kept, src_dir_fd=task_fd, dst_dir_fd=task_fd)
        done = sorted(name for name in os.listdir(task_fd) if name.startswith(DONE_PREFIX))
        for name in done[: max(len(done) - keep, 0)]:
            _remove(task_fd, task_dir, name, removed, problems)
        return Finished(f"{task_dir}/{kept}" if kept else None, tuple(removed), tuple(problems))
    finally:
        os.close(task_fd)


def _remove(parent_fd: int, parent: str, name: str, removed: list[str], problems: list[str]) -> None:
    """Remove the directory `name` below `parent_fd` without following any link in or below it."""
    path = f"{parent}/{name}"
    try:
        info = os.lstat(name, dir_fd=parent_fd)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode):  # only this module's directories live here; anything else is left
        problems.append(f"{path} is not a directory; left")
        return
    failures: list[str] = []

    def note(_function, failed_path, exc_info) -> None:
        failures.append(f"{failed_path}: {getattr(exc_info[1], 'strerror', exc_info[1])}")

    shutil.rmtree(name, dir_fd=parent_fd, onerror=note)
    if failures:
        problems.append(
            f"{path}: could not remove {failures[0]}" + (f" (+{len(failures) - 1})" if failures[1:] else "")
        )
    else:
        removed.append(path)


def _digest(parts: Iterable[str], size: int) -> str:
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()[:size]
    return base64.b32encode(digest).decode().rstrip("=").lower()


def _slug(text: str, limit: int) -> str:
    """A readable, lossy part of a name: `A-Z a-z 0-9 _ . -`, starting and ending with a letter or digit."""
    return _UNSAFE.sub("-", text)[:limit].strip("-_.") or "x"
