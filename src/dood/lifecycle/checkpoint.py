"""What a task's try does with its checkpoint directory (`checkpoint=True`): mount it, say what is in it, and
finish it when the task succeeds. The directory itself (its name, making it, removing it) is `dood.mounts.checkpoints`.

- Every try of a task instance mounts the same directory at `/dood/checkpoint` (`$DOOD_CHECKPOINT_DIR`): the
  instance's, below `checkpoint_root`, a directory named `dood-checkpoints` (default
  `<runs_root>/dood-checkpoints`; a pipeline step: its `artifact_root`'s), translated through the mount map like
  every bind source.
- The task log shows its host path and what it holds (files, bytes, last modified) when the container starts
  and when it ends.
- A failed try leaves it; a task that succeeded removes it, or keeps the task's `checkpoint_retention` newest.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from docker.types import Mount

from dood.exceptions import DoodConfigError, DoodError
from dood.mounts.checkpoints import (
    CHECKPOINT_DIR_ENV,
    CHECKPOINT_DIR_IN_CONTAINER,
    CHECKPOINTS_DIR_NAME,
    MAX_RETENTION,
    CheckpointKey,
    checkpoint_path,
    first_try_of,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from dood.config.model import DoodConfig
    from dood.config.placement import Placement
    from dood.mounts.mount_map import MountMap
    from dood.mounts.run_directories import HostDirectories
    from dood.naming import TaskIdentity

__all__ = ["CHECKPOINT_XCOM_KEY", "CheckpointContents", "TaskCheckpoint", "contents_of"]

#: The most entries looked at when describing a checkpoint (a log line, not an inventory).
MAX_ENTRIES = 10_000
#: The most directories held open, found but not yet listed, while describing one (then it says "truncated").
MAX_OPEN_DIRECTORIES = 256
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

#: The XCom naming a try's checkpoint host path (`{"host_path": ...}`): the Container tab reads it
#: (`dood.ui.checkpoint.XCOM_KEY`, pinned equal by a test) when the container, and its mount, are gone.
CHECKPOINT_XCOM_KEY = "dood_checkpoint"


@dataclass(frozen=True)
class CheckpointContents:
    """What a checkpoint directory holds, as the task log and the Container tab show it."""

    files: int
    bytes: int
    last_modified: float | None  # newest modification time of anything in it (epoch seconds)
    newest: tuple[str, ...]  # up to 3 newest files, relative names
    truncated: bool = False

    def describe(self) -> str:
        if not self.files:
            return "empty"
        when = datetime.fromtimestamp(self.last_modified or 0, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        more = " (more not counted)" if self.truncated else ""
        return f"{self.files} file(s), {self.bytes} bytes{more}, last modified {when}; newest: {', '.join(self.newest)}"

    def to_json(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "bytes": self.bytes,
            "last_modified": self.last_modified,
            "newest": list(self.newest),
            "truncated": self.truncated,
        }


def contents_of(path: str) -> CheckpointContents | None:
    """The files below `path` (never following a link), or None when this process cannot read it.

    The steps write in the directory while it is read, so a directory could be swapped for a link between its
    `lstat` and its listing: each one is opened by descriptor, relative to its parent's, with O_NOFOLLOW
    (`path` itself too), and listed through that descriptor; nothing is resolved by path twice."""
    files = size = 0
    newest: list[tuple[float, str]] = []
    last = None
    seen = 0
    stack: list[tuple[int, str]] = []
    try:
        stack.append((os.open(path, _DIRECTORY_FLAGS), ""))
        while stack:
            fd, relative = stack.pop()
            try:
                with os.scandir(fd) as entries:
                    for entry in entries:
                        seen += 1
                        if seen > MAX_ENTRIES or len(stack) >= MAX_OPEN_DIRECTORIES:
                            return CheckpointContents(files, size, last, _names(newest), truncated=True)
                        info = entry.stat(follow_symlinks=False)
                        name = f"{relative}/{entry.name}" if relative else entry.name
                        last = info.st_mtime if last is None else max(last, info.st_mtime)
                        if stat.S_ISDIR(info.st_mode):
                            stack.append((os.open(entry.name, _DIRECTORY_FLAGS, dir_fd=fd), name))
                        elif stat.S_ISREG(info.st_mode):
                            files += 1
                            size += info.st_size
                            newest = sorted([*newest, (info.st_mtime, name)], reverse=True)[:3]
            finally:
                os.close(fd)
    except OSError:
        return None
    finally:
        for fd, _ in stack:
            os.close(fd)
    return CheckpointContents(files, size, last, _names(newest))


def _names(newest: list[tuple[float, str]]) -> tuple[str, ...]:
    return tuple(name[:120].encode("unicode_escape").decode() for _, name in newest)


class TaskCheckpoint:
    """A task's checkpoint setting (`checkpoint=True`, `checkpoint_retention`, `checkpoint_root`)."""

    def __init__(self, *, retention: int = 0, root: str | None = None, task_id: str = "task") -> None:
        if type(retention) is not int or not 0 <= retention <= MAX_RETENTION:
            raise DoodConfigError(
                f"{task_id}: checkpoint_retention must be an integer from 0 (remove it on success) to "
                f"{MAX_RETENTION}, got {retention!r}"
            )
        if root is not None and (not isinstance(root, str) or not root.startswith("/")):
            raise DoodConfigError(f"{task_id}: checkpoint_root must be an absolute path (Airflow-side), got {root!r}")
        if root is not None and os.path.basename(os.path.normpath(root)) != CHECKPOINTS_DIR_NAME:
            raise DoodConfigError(
                f"{task_id}: checkpoint_root must be a directory named {CHECKPOINTS_DIR_NAME!r} (dood-proxy makes and "
                f"removes checkpoints only there), got {root!r}; e.g. {os.path.normpath(root)}/{CHECKPOINTS_DIR_NAME}"
            )
        self.retention = retention
        self.root = os.path.normpath(root) if root else None
        self.task_id = task_id
        self.host_path: str | None = None  # set once mounted: what the task log (and the UI) names

    @classmethod
    def of(
        cls,
        checkpoint: bool,
        *,
        retention: int | None,
        root: str | None,
        placement: Placement | None,
        task_id: str,
        wait: bool = True,
    ) -> TaskCheckpoint | None:
        """The setting, or None without `checkpoint`; a retention or root without it is a mistake."""
        if not isinstance(checkpoint, bool):
            raise DoodConfigError(f"{task_id}: checkpoint must be true or false, got {checkpoint!r}")
        if not checkpoint:
            if retention or root:
                raise DoodConfigError(f"{task_id}: checkpoint_retention and checkpoint_root need checkpoint=True")
            return None
        if not wait:
            raise DoodConfigError(
                f"{task_id}: checkpoint=True needs wait=True: a handed-off container (wait=False) outlives this "
                "task, which could then neither keep its checkpoint for a retry nor remove it after success"
            )
        if placement is not None and len(placement.hosts) > 1 and root is None:
            raise DoodConfigError(
                f"{task_id}: checkpoint=True on a step placed on several hosts ({', '.join(placement.hosts)}) needs "
                "checkpoint_root= on storage every one of them mounts (a retry may run on another host); the "
                f"default, <runs_root>/{CHECKPOINTS_DIR_NAME}, is each host's own"
            )
        return cls(retention=retention or 0, root=root, task_id=task_id)

    def root_for(self, config: DoodConfig) -> str:
        return self.root or f"{config.runs_root.rstrip('/')}/{CHECKPOINTS_DIR_NAME}"

    @staticmethod
    def key(context: Any, identity: TaskIdentity, retries: int | None) -> CheckpointKey:
        """The task instance's key: its identity without the try, with its clear generation."""
        ti = context["ti"]
        first = first_try_of(identity.try_number, getattr(ti, "max_tries", None), retries)
        return CheckpointKey(
            stack=identity.stack,
            dag_id=identity.dag_id,
            task_id=identity.task_id,
            run_id=identity.run_id,
            map_index=identity.map_index,
            first_try=first,
        )

    def mount(self, config: DoodConfig, mount_map: MountMap, key: CheckpointKey, mounts: list) -> dict[str, str]:
        """Append the checkpoint's mount to `mounts`; returns the environment telling the step where it is."""
        for mount in mounts:
            if mount.get("Target") == CHECKPOINT_DIR_IN_CONTAINER:
                raise DoodConfigError(f"{self.task_id}: mounts: {CHECKPOINT_DIR_IN_CONTAINER} is reserved (checkpoint)")
        root = self.root_for(config)
        self.host_path = checkpoint_path(mount_map.to_host(root, f"{self.task_id}: checkpoint_root"), key)
        mounts.append(Mount(target=CHECKPOINT_DIR_IN_CONTAINER, source=self.host_path, type="bind"))
        return {CHECKPOINT_DIR_ENV: CHECKPOINT_DIR_IN_CONTAINER}

    def prepare(
        self,
        directories: HostDirectories,
        config: DoodConfig,
        key: CheckpointKey,
        user: str,
        emit: Callable[[str], Any],
    ) -> str:
        """Make (or find) the directory before the container is created; logs its host path and contents."""
        what = f"{self.task_id}: checkpoint"
        host_path = directories.for_checkpoint(self.root_for(config), key, user, what=what)
        if self.host_path is not None and host_path != self.host_path:
            raise DoodError(f"{what}: the directory made ({host_path}) is not the one mounted ({self.host_path})")
        self.host_path = host_path
        self._log(directories, config, key, "at start", emit)
        return host_path

    def after(
        self,
        directories: HostDirectories,
        config: DoodConfig,
        key: CheckpointKey,
        *,
        succeeded: bool,
        emit: Callable[[str], Any],
    ) -> None:
        """Log what the try left; on success remove the directory (or keep the task's newest). Never raises:
        the task's outcome is the container's."""
        try:
            self._log(directories, config, key, "at end", emit)
            if not succeeded:
                emit("Checkpoint kept for the next try of this task instance")
                return
            done = directories.finish_checkpoint(
                self.root_for(config), key, keep=self.retention, what=f"{self.task_id}: checkpoint"
            )
            if done.kept:
                emit(f"Checkpoint kept as {done.kept} (checkpoint_retention {self.retention})")
            for path in done.removed:
                emit(f"Checkpoint removed: {path}")
            for problem in done.problems:
                emit(f"Checkpoint not removed whole: {problem}")
        except Exception as exc:  # noqa: BLE001 - a log line or a cleanup must not change the task's outcome
            emit(f"Checkpoint: could not finish ({exc})")

    def _log(
        self,
        directories: HostDirectories,
        config: DoodConfig,
        key: CheckpointKey,
        when: str,
        emit: Callable[[str], Any],
    ) -> None:
        host_path = self.host_path or checkpoint_path(
            directories.mount_map.to_host(self.root_for(config), "checkpoint_root"), key
        )
        local = directories.mount_map.local_view(checkpoint_path(self.root_for(config), key))
        contents = contents_of(local) if local else None
        shown = contents.describe() if contents else "not readable from this process"
        emit(f"Checkpoint {host_path} {when}: {shown}")
