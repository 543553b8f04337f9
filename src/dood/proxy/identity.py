"""Who a container created through dood-proxy is: its user, its groups, its labels and its name.

The policy allow-lists identities (`policy.allowed_users`, `allowed_group_add`); this module adds what only
the running proxy knows. A uid that owns the directories above bind sources (root, the proxy's own uid:
`hostpaths.trusted_uids`) could re-point them, and a gid that opens the Docker socket is root on the host:
such identities are refused even when a policy lists them (at start, and at every create, in case the
process's ids are not what its config was written for). Every `dood.*` label is the proxy's to set or
drop, and a name of dood's pattern must be the one its task labels give in this proxy's stack, so no
client can take another stack's names or forge what the proxy decides from labels.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Mapping
from typing import Any

from dood.gpus.holdings import LOCK_NAME, PROBE_NAME
from dood.mounts.source_safety import trusted_uids
from dood.naming import (
    DAG_ID_LABEL,
    HOST_LABEL,
    LABEL_PREFIX,
    MANAGED_LABEL,
    MAP_INDEX_LABEL,
    RUN_ID_LABEL,
    STACK_LABEL,
    TASK_ID_LABEL,
    TRY_NUMBER_LABEL,
    TaskIdentity,
)
from dood.policy import Policy
from dood.policy.model import parse_user
from dood.proxy.allow_list import Refused

#: Labels a client may set: which task instance try a container runs (the stack and host are the proxy's).
TASK_LABELS = (DAG_ID_LABEL, TASK_ID_LABEL, RUN_ID_LABEL, MAP_INDEX_LABEL, TRY_NUMBER_LABEL)
#: Labels of GPU claims, tickets, the engine lock and the probe: passed on to `proxy.gpus`, which checks
#: their exact shapes (and drops or refuses the rest).
GPU_LABEL_PREFIX = "dood.gpu"
#: Names of dood's task containers; the GPU bookkeeping's own (the lock, the probe, tickets) are
#: `proxy.gpus`'s to check.
TASK_NAME_PREFIX = "dood-"
GPU_TICKET_PREFIX = "dood-gpu-ticket-"


def forbidden_gids(socket_path: str | None) -> frozenset[int]:
    """Groups no container may have: the Docker socket's group (when the upstream is a unix socket) and the
    proxy's own groups other than 0 (gid 0 owns no directory a container could write above a bind source:
    they must not be group-writable at all; and steps run as group 0 in the Airflow image's convention)."""
    gids = {gid for gid in (os.getegid(), *os.getgroups()) if gid != 0}
    if socket_path:
        try:
            gids.add(os.stat(socket_path).st_gid)
        except OSError:
            pass  # not there yet: the daemon's own error says more when it is asked
    return frozenset(gids)


class IdentityGuard:
    """The proxy's side of a container's identity (the policy's side is `dood.policy.rules`)."""

    def __init__(self, policy: Policy, *, socket_path: str | None, stack: str, host: str | None) -> None:
        self.policy = policy
        self.socket_path = socket_path
        self.stack = stack
        self.host = host

    def problems(self) -> list[str]:
        """Why the policy's identities are unsafe for this proxy (empty: none); the proxy refuses to start."""
        if self.policy.allow_root_user:
            return []
        found = []
        bad_uids, bad_gids = trusted_uids(), forbidden_gids(self.socket_path)
        for user in self.policy.allowed_users:
            uid, gid = parse_user(user) or (0, 0)
            if uid in bad_uids:
                found.append(
                    f"policy.allowed_users {user!r}: uid {uid} owns the directories above bind sources "
                    f"(dood-proxy runs as uid {os.geteuid()}); a container with it could re-point them"
                )
            if gid in bad_gids:
                found.append(
                    f"policy.allowed_users {user!r}: gid {gid} is a group of dood-proxy or of the Docker socket"
                )
        for gid in self.policy.allowed_group_add:
            if gid in bad_gids:
                found.append(f"policy.allowed_group_add {gid}: a group of dood-proxy or of the Docker socket")
        return found

    def check(self, body: Mapping[str, Any]) -> None:
        """Refuse (403) a create whose user or groups are this proxy's own or the socket's (defence in depth:
        the same as `problems`, at every create, with the ids of now)."""
        if self.policy.allow_root_user:
            return
        owner = parse_user(body.get("User"))
        groups = [int(g) for g in (body.get("HostConfig") or {}).get("GroupAdd") or [] if str(g).isdigit()]
        bad_gids = forbidden_gids(self.socket_path)
        if owner is None or owner[0] in trusted_uids() or owner[1] in bad_gids or set(groups) & bad_gids:
            raise Refused(
                403,
                f"user {body.get('User')!r} with groups {groups}: dood-proxy's own uid, root, or a group of the "
                "proxy or the Docker socket; containers never run as those (policy.allowed_users)",
            )

    def labels(self, asked: Mapping[str, Any] | None) -> dict[str, str]:
        """The labels a created container gets: the client's own, its task labels, the GPU labels (for
        `proxy.gpus` to check), and the proxy's (managed, stack, host); every other `dood.*` label dropped."""
        labels = {
            key: value
            for key, value in (asked or {}).items()
            if not key.startswith(LABEL_PREFIX)
            or key in (*TASK_LABELS, "dood.handoff")
            or key.startswith(GPU_LABEL_PREFIX)
        }
        labels[MANAGED_LABEL] = "true"
        labels[STACK_LABEL] = self.stack
        if self.host is not None:  # the host is part of the identity: whatever the client said, it is here
            labels[HOST_LABEL] = self.host
        return labels

    def check_name(self, name: str | None, labels: Mapping[str, str]) -> None:
        """A `dood-…` name must be the one its task labels give in this stack (`TaskIdentity.container_name`):
        names are a shared namespace on the engine, and another stack would otherwise take ours (our create
        then fails with 409). The GPU lock's, probe's and tickets' names are `proxy.gpus`'s to check (a task
        of a DAG whose id starts with `gpu` is a task name like any other)."""
        name = (name or "").lstrip("/")
        if not name.startswith(TASK_NAME_PREFIX) or name in (LOCK_NAME, PROBE_NAME):
            return
        if name.startswith(GPU_TICKET_PREFIX):
            return
        expected = _task_name(labels, self.stack)
        if name != expected:
            raise Refused(
                403,
                f"container name {name!r}: names starting with {TASK_NAME_PREFIX!r} are dood's task containers and "
                f"must be the name their task labels give in stack {self.stack!r}"
                + (f" ({expected!r})" if expected else f" (labels {list(TASK_LABELS)} are missing)"),
            )


def _task_name(labels: Mapping[str, str], stack: str) -> str | None:
    if any(key not in labels for key in TASK_LABELS):
        return None
    try:
        identity = TaskIdentity(
            dag_id=labels[DAG_ID_LABEL],
            task_id=labels[TASK_ID_LABEL],
            run_id=labels[RUN_ID_LABEL],
            map_index=int(labels[MAP_INDEX_LABEL]),
            try_number=int(labels[TRY_NUMBER_LABEL]),
            stack=stack,
        )
    except ValueError:
        return None
    return identity.container_name()


def image_group_problems(archive: bytes, groups: list[str]) -> list[str]:
    """Why the container's own `/etc/group` (a tar of it, from the daemon's archive endpoint) would turn a
    `GroupAdd` number into another group: the runtime looks each entry up by *name* first, so an image with
    a group named `2000` and gid 105 (say, the socket's) gets 105 for `GroupAdd ["2000"]`. Empty: none."""
    try:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            member = next((m for m in tar.getmembers() if m.name.rstrip("/").split("/")[-1] == "group"), None)
            if member is None or not member.isfile():
                return ["the image's /etc/group is not a regular file: its groups cannot be checked"]
            handle = tar.extractfile(member)
            text = handle.read().decode("utf-8", "replace") if handle is not None else ""
    except (tarfile.TarError, OSError, EOFError):
        return ["the image's /etc/group could not be read"]
    wanted = set(groups)
    found = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] in wanted and fields[2].strip() != fields[0]:
            found.append(
                f"GroupAdd {fields[0]!r}: the image's /etc/group names a group {fields[0]!r} with gid "
                f"{fields[2].strip()!r}, which the runtime would give instead"
            )
    return found
