"""The Container tab's checkpoint (`checkpoint=True`): the directory's host path and what is in it.

The host path is the one the container really mounts at `/dood/checkpoint` (its inspect, `Mounts`); no
operator is loaded and nothing is derived again. Once the container is gone (dood removes it when its outcome
is read), the task instance's XCom `dood_checkpoint` (`{"host_path": ...}`) names it, when the operator
pushed one. What it holds (files, bytes, last modified, the newest names:
`dood.lifecycle.checkpoint.contents_of`, as the task log says it) is read where the api-server sees that
directory: through the dood config's `mount_map` (host path -> Airflow-side path), else the path itself
(Airflow on the Docker host). Where the api-server does not mount it, or its user may not read it (a
checkpoint is a leaf of mode 2770 for the steps' group), the tab says so instead of guessing; the task log,
written on the worker, always has it.

Only a path shaped like a checkpoint directory (`.../dood-checkpoints/<stack>/<task>/run-...`, clean)
is read, never through a link: a container's mount list is not trusted to name what the api-server lists.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dood.mounts.checkpoints import CHECKPOINT_DIR_IN_CONTAINER, CHECKPOINTS_DIR_NAME, INSTANCE_PREFIX
from dood.policy.paths import clean_path

if TYPE_CHECKING:
    from dood.config.endpoints import MountMapEntry
    from dood.lifecycle.checkpoint import CheckpointContents
    from dood.ui.rows import TaskKey

__all__ = ["XCOM_KEY", "CheckpointView", "checkpoint_view", "host_path_of", "local_path", "xcom_host_path"]

#: The XCom `{"host_path": ...}` naming the instance's checkpoint once its container is gone (a failed try's,
#: kept for the next): read when an operator pushes it.
XCOM_KEY = "dood_checkpoint"


@dataclass(frozen=True)
class CheckpointView:
    host_path: str
    contents: CheckpointContents | None = None
    note: str | None = None  # why no contents are shown


def host_path_of(inspected: Mapping[str, Any] | None) -> str | None:
    """The host path mounted at `/dood/checkpoint` in the container, or None (no checkpoint)."""
    for mount in (inspected or {}).get("Mounts") or ():
        if (
            isinstance(mount, Mapping)
            and mount.get("Destination") == CHECKPOINT_DIR_IN_CONTAINER
            and isinstance(mount.get("Source"), str)
        ):
            return mount["Source"]
    return None


def xcom_host_path(task: TaskKey) -> str | None:
    """The checkpoint's host path from the task instance's XCom `dood_checkpoint`, when one was pushed."""
    from dood.ui.task_states import task_xcom

    value = task_xcom(task, XCOM_KEY)
    path = value.get("host_path") if isinstance(value, dict) else None
    return path if isinstance(path, str) and path else None


def looks_like_checkpoint(path: str) -> bool:
    """`<root named dood-checkpoints>/<stack>/<task dir>/run-...`, absolute and clean."""
    if not path.startswith("/") or clean_path(path) != path:
        return False
    parts = path.split("/")
    return len(parts) >= 5 and parts[-4] == CHECKPOINTS_DIR_NAME and parts[-1].startswith(INSTANCE_PREFIX)


def local_path(host_path: str, entries: Iterable[MountMapEntry]) -> str:
    """Where this process would see `host_path`: the Airflow-side path of the mount map entry covering it
    (longest host path first), else the path itself."""
    for entry in sorted(entries, key=lambda e: len(e.host_path), reverse=True):
        host = entry.host_path.rstrip("/") or "/"
        if host_path == host or host_path.startswith(host.rstrip("/") + "/"):
            rest = host_path[len(host) :].lstrip("/")
            return os.path.join(entry.airflow_path, rest) if rest else entry.airflow_path
    return host_path


def checkpoint_view(host_path: str, entries: Iterable[MountMapEntry] | None = None) -> CheckpointView:
    """The host path and, where the api-server may read it, what it holds (module doc)."""
    from dood.lifecycle.checkpoint import contents_of

    if not looks_like_checkpoint(host_path):
        return CheckpointView(host_path, note="not read: the path is not shaped like a dood checkpoint directory")
    if entries is None:
        from dood.config.model import load_config

        entries = load_config().mount_map
    local = local_path(host_path, entries)
    if not os.path.isdir(local):
        return CheckpointView(
            host_path,
            note="not visible from the api-server (it does not mount this directory); the task log says what "
            "each try found and left in it",
        )
    if os.path.islink(local):
        return CheckpointView(host_path, note="not read: a symbolic link")
    contents = contents_of(local)
    if contents is None:
        return CheckpointView(
            host_path,
            note="not readable by the api-server's user (a checkpoint is for the steps' group only); the task "
            "log says what each try found and left in it",
        )
    return CheckpointView(host_path, contents)
