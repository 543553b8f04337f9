"""dood-proxy's own endpoints (`/dood/v1/...`): directories for containers, made by the one trusted party.

Airflow's task code and the launched containers run as non-root users and cannot write the directories
above a bind source (`dood.mounts.source_safety`). So a run's directories (its run directory, its partition, a model
directory) are made here, by the proxy, on request: below an allowed root, owned by the proxy and shared
with the container's group, and never by changing what exists: nothing is ever deleted, re-owned or
re-moded. Nothing here talks to the Docker daemon.

`POST /dood/v1/directories` takes `{"path": ..., "user": "uid:gid", "fresh": true}`; everything is checked
before anything is made, so a refusal leaves nothing on disk:

- `path`: absolute and clean, at most `MAX_PATH_CHARS` characters, below an allowed root by at most
  `MAX_DEPTH` names, each of `NAME_CHARACTERS` (no control character, no newline, no ':' (the `Binds`
  separator), no hidden name); never an allowed or read-only root itself, nor a leaf above one.
- `user` (a leaf, mode 2770, for that user's group): one of `policy.allowed_users`, with a group this proxy
  can give; never under a read-only root. Without `user`: a directory only trusted users write (an input).
- `fresh` (a run directory, one per try): the directory must be new, or an empty leaf of that group. A
  stale result of an earlier attempt with the same name is never removed, and never read as this one's.

`POST /dood/v1/directories` with `{"kind": "checkpoint", "root", "task": {"dag_id", "task_id", "run_id",
"map_index", "first_try"}, "user"}` makes (or finds, whatever it holds) a task instance's checkpoint
directory, reused by every try of the instance (`dood.mounts.checkpoints`). The client names a task instance and a
root, never the directory: `root`'s last name must be `dood-checkpoints`, and the proxy derives
`<root>/<its own stack>/<task>/run-<instance>` itself; every rule above holds for that path. A plain request
never names a `dood-checkpoints` directory, nor anything below one: that tree is made only here.
`"action": "finish"` (with `"keep": N`, no `user`) is the one place the proxy removes anything: it reaches the
task's directory from `/` through checked `O_NOFOLLOW` fds (never under a read-only root), renames the
instance's leaf `done-...`, and removes finished ones beyond N and older clear generations of the instance:
only checkpoint leaves, never following a link, at most `MAX_REMOVED_ENTRIES` entries a request and
`REMOVERS` requests at once (more: 429, Retry-After).

Every request that makes something holds one lock (`_MAKING`) from its checks to its last change: no other
request makes or re-modes a directory between them (a `fresh` leaf found empty stays empty until it is one).
A finish makes nothing and removes only below fds it checked, outside that lock: opens never wait for it.

At most `BURST` directories at once and `PER_MINUTE` a minute are made (`DirectoryBudget`); more is answered
429 with Retry-After, which the Airflow side waits out (`dood.mounts.run_directories.HostDirectories`).
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dood.mounts.checkpoints import (
    CHECKPOINTS_DIR_NAME,
    MAX_RETENTION,
    CheckpointKey,
    check_root,
    checkpoint_path,
    finish_checkpoint,
    open_checkpoint,
)
from dood.mounts.source_safety import (
    LeafConflict,
    UnsafePath,
    can_give_group,
    covering_root,
    make_leaf,
    make_skeleton,
    missing_directories,
)
from dood.policy.model import Policy, parse_user
from dood.policy.paths import clean_path, under
from dood.proxy import wire
from dood.proxy.allow_list import Refused

#: 2: `clear` is gone, `fresh` asks for a new run directory; 3: `kind: checkpoint`; 4: checkpoint roots named
#: `dood-checkpoints`, instance directories `run-...`, finished `done-<ns>-run-...`
API_VERSION = 4
#: The longest path accepted (the kernel's PATH_MAX is 4096; dood's own paths stay well under 300).
MAX_PATH_CHARS = 1024
#: The most names below the allowed root (a run directory is 1-3 deep, a partition 3-5).
MAX_DEPTH = 16
#: What a name below the allowed root may hold: letters, digits, '_', '.', '-' (dood's generated names:
#: container names, partition keys, pipeline names), starting with a letter, digit or '_', at most 128.
NAME_CHARACTERS = "A-Z a-z 0-9 _ . -"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
#: Directories made a minute, and at once (token bucket, one per proxy; what exists costs nothing). A launch
#: makes one new directory (its run directory, one per try), a pipeline run's first step also its partition
#: (1-3 with the pipeline's folder): a backfill of 100 dates (4 steps each) makes ~500 in all, while a host
#: starts about one container a second (0.78-1.04 s per step, docs/benchmarks.md): ~60-120 a minute. 300 a
#: minute is 2.5-5x that, and the burst covers a wave of 40 parallel launches of 3 each. Past it a client
#: waits (429, Retry-After; HostDirectories waits up to 10 minutes): a burst slows, never fails, a pipeline.
PER_MINUTE = 300
BURST = 120
_FIELDS = {"path", "user", "fresh"}
_CHECKPOINT_FIELDS = {"kind", "root", "task", "user", "action", "keep"}
#: Checkpoint finishes removing at once: each removes at most `dood.mounts.checkpoints.MAX_REMOVED_ENTRIES` entries,
#: so at most this many of the server's worker threads are ever busy removing (opens keep the others).
REMOVERS = 2
_REMOVING = threading.BoundedSemaphore(REMOVERS)
#: Held by every request that makes something, from its first check to its last change (module doc).
_MAKING = threading.Lock()


def info() -> dict[str, Any]:
    """What `GET /dood/v1/info` answers: that this is dood-proxy, and its API's version."""
    return {"proxy": "dood-proxy", "api": API_VERSION}


class TooMany(Refused):
    """Over the directories budget: 429, and when to ask again."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(
            429,
            f"more than {PER_MINUTE} directories a minute (a burst of {BURST}) asked of this proxy; "
            f"ask again in {self.retry_after} s (Retry-After)",
        )


def too_many_response(refused: TooMany) -> bytes:
    """The 429 answer, with Retry-After (`wire.error_response` carries no extra header)."""
    body = json.dumps({"message": refused.message}).encode()
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Retry-After", str(refused.retry_after)),
    ]
    return wire.encode_head("HTTP/1.1 429 Too Many Requests", headers) + body


class DirectoryBudget:
    """A token bucket of directories: `burst` at once, refilled at `per_minute`; thread-safe."""

    def __init__(
        self, *, per_minute: float = PER_MINUTE, burst: int = BURST, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if burst < MAX_DEPTH:
            raise ValueError(f"burst {burst} must be at least MAX_DEPTH ({MAX_DEPTH}): one request makes that many")
        self.rate = per_minute / 60
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = threading.Lock()

    def take(self, count: int) -> None:
        """Spend `count` directories, or raise `TooMany` (spending nothing)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if count > self._tokens:
                raise TooMany((count - self._tokens) / self.rate)
            self._tokens -= count

    def give_back(self, count: int) -> None:
        """Return what was taken and not spent (a refused request made fewer directories than it asked)."""
        with self._lock:
            self._tokens = min(self.burst, self._tokens + count)


#: This proxy's budget (one process serves one proxy).
BUDGET = DirectoryBudget()


class BusyRemoving(TooMany):
    """`REMOVERS` checkpoint finishes are removing already: 429, ask again shortly."""

    def __init__(self) -> None:
        self.retry_after = 2
        Refused.__init__(
            self,
            429,
            f"{REMOVERS} checkpoint finishes are removing directories already; ask again in 2 s (Retry-After)",
        )


def describe(answer: Mapping[str, Any]) -> str:
    """What a directories answer did, for the proxy's log (every value in it was checked or derived)."""
    if answer.get("kind") == "checkpoint" and "removed" in answer:
        return (
            f"checkpoint {answer['path']} finished: kept {answer.get('kept') or 'none'}, removed "
            f"{len(answer.get('removed') or ())} director(ies), {len(answer.get('problems') or ())} left with a problem"
        )
    what = "checkpoint" if answer.get("kind") == "checkpoint" else "directory"
    how = "made" if answer.get("created") else "found"
    return f"{what} {answer['path']} {how}, written by {answer.get('user') or 'trusted users only'}"


@dataclass(frozen=True)
class DirectoryRequest:
    """A checked request: a clean path below `root`, the leaf's owner (None: trusted users only), fresh."""

    path: str
    root: str
    owner: tuple[int, int] | None
    fresh: bool
    group: int | None = None  # the leaf's host gid: the owner's gid, or the host gid it is on a remapping engine

    @property
    def user(self) -> str | None:
        return f"{self.owner[0]}:{self.owner[1]}" if self.owner else None


def make_directory(
    request: Any,
    policy: Policy,
    budget: DirectoryBudget = BUDGET,
    *,
    host_gid: Callable[[int], int | None] | None = None,
    stack: str | None = None,
) -> dict[str, Any]:
    """`POST /dood/v1/directories` (module doc): `{"path", "created"[, "user"]}`, or `Refused` with why.
    `host_gid`: on an engine that remaps user namespaces, the host gid of a container's gid
    (`dood.engine.security.EngineRemap`): the leaf's group is the one the container's group is on the host.
    `stack`: this proxy's stack, which a checkpoint's path is derived with (`kind: checkpoint`)."""
    if isinstance(request, Mapping) and "kind" in request:
        return checkpoint_directory(request, policy, budget, host_gid=host_gid, stack=stack)
    asked = check_request(request, policy, host_gid=host_gid)
    if CHECKPOINTS_DIR_NAME in asked.path.split("/"):
        raise Refused(
            403,
            f"path {asked.path}: a {CHECKPOINTS_DIR_NAME!r} directory and what is below it are made only with "
            "'kind': 'checkpoint' (a task instance's checkpoint directory); choose another path",
        )
    with _MAKING:
        count = missing_directories(asked.path, [asked.root])
        budget.take(count)  # what exists costs nothing
        try:
            if asked.owner is None or asked.group is None:  # _check_user gives both or neither
                created = make_skeleton(asked.path, [asked.root], fresh=asked.fresh)
            else:
                created = make_leaf(asked.path, [asked.root], gid=asked.group, fresh=asked.fresh)
        except (UnsafePath, LeafConflict, OSError) as exc:
            # what a refusal did not make is given back: refused requests drain no one's budget
            budget.give_back(min(count, missing_directories(asked.path, [asked.root])))
            raise _refusal(asked.path, exc) from None
    answer: dict[str, Any] = {"path": asked.path, "created": created}
    if asked.user:
        answer["user"] = asked.user
    return answer


def checkpoint_directory(
    request: Mapping[str, Any],
    policy: Policy,
    budget: DirectoryBudget = BUDGET,
    *,
    host_gid: Callable[[int], int | None] | None = None,
    stack: str | None,
) -> dict[str, Any]:
    """`kind: checkpoint` (module doc): the task instance's checkpoint directory, at the path this proxy derives
    from the instance and its own stack; opened (made or found) or, with `action: finish`, finished."""
    if request.get("kind") != "checkpoint":
        raise Refused(
            400, f"kind must be 'checkpoint' (or absent, for a plain directory), got {shown(request.get('kind'))}"
        )
    unknown = sorted(set(request) - _CHECKPOINT_FIELDS)
    if unknown:
        raise Refused(
            400,
            f"unknown field(s) {shown(unknown)} for a checkpoint; expected 'root', 'task', 'user', 'action', 'keep'",
        )
    if not stack:
        raise Refused(
            501, "this dood-proxy cannot derive checkpoint directories: its server does not pass its stack (upgrade it)"
        )
    action = request.get("action", "open")
    if action not in ("open", "finish"):
        raise Refused(400, f"action must be 'open' or 'finish', got {shown(action)}")
    try:
        key = CheckpointKey.from_request(request.get("task"), stack)
    except ValueError as exc:
        raise Refused(400, f"task: {exc}") from None
    root = request.get("root")
    if not isinstance(root, str) or not root.startswith("/") or clean_path(root) != (root.rstrip("/") or "/"):
        raise Refused(400, f"root {shown(root)} must be an absolute, clean host path (no '..', '.', '//')")
    try:
        check_root(root)
    except UnsafePath as exc:
        raise Refused(400, str(exc)) from None
    derived = checkpoint_path(root, key)
    if action == "finish":
        keep = request.get("keep", 0)
        if type(keep) is not int or not 0 <= keep <= MAX_RETENTION:
            raise Refused(400, f"keep must be an integer from 0 to {MAX_RETENTION}, got {shown(keep)}")
        if "user" in request:
            raise Refused(400, "a checkpoint's finish takes no 'user'")
        asked = check_request({"path": derived}, policy)  # the same path rules: below an allowed root, clean names
        _check_writable_place(derived, policy)  # ... and those of a leaf: never under a read-only root
        if not _REMOVING.acquire(blocking=False):  # a worker thread never waits for another's removal
            raise BusyRemoving
        try:
            finished = finish_checkpoint(root, key, [asked.root], keep=keep)
        except (UnsafePath, OSError) as exc:
            raise _refusal(derived, exc) from None
        finally:
            _REMOVING.release()
        return {"kind": "checkpoint", "path": derived, **finished.to_answer()}
    if "keep" in request:
        raise Refused(400, "'keep' is given with action 'finish'")
    if request.get("user") is None:
        raise Refused(400, "a checkpoint directory needs 'user' (the container's 'uid:gid'): its steps write it")
    asked = check_request({"path": derived, "user": request["user"]}, policy, host_gid=host_gid)
    assert asked.group is not None  # noqa: S101 - narrowing: a user's leaf always has its group
    with _MAKING:
        count = missing_directories(asked.path, [asked.root])
        budget.take(count)
        try:
            path, created = open_checkpoint(root, key, [asked.root], gid=asked.group)
        except (UnsafePath, LeafConflict, OSError) as exc:
            budget.give_back(min(count, missing_directories(asked.path, [asked.root])))
            raise _refusal(derived, exc) from None
    return {"kind": "checkpoint", "path": path, "created": created, "user": asked.user}


def _refusal(path: str, exc: Exception) -> Refused:
    if isinstance(exc, UnsafePath):
        return Refused(403, str(exc))
    if isinstance(exc, LeafConflict):
        return Refused(409, str(exc))
    if isinstance(exc, PermissionError):
        return Refused(403, f"dood-proxy may not make {path} ({exc.strerror}); it must own the allowed root")
    assert isinstance(exc, OSError)  # noqa: S101 - narrowing: the only errors caught above
    return Refused(500, f"dood-proxy cannot make {path}: {exc.strerror}")


def check_request(
    request: Any, policy: Policy, *, host_gid: Callable[[int], int | None] | None = None
) -> DirectoryRequest:
    """Every field of a request checked (`Refused` 400 naming the field, 403 for what the policy denies)."""
    if not isinstance(request, Mapping):
        raise Refused(400, "expected a JSON object with 'path', and optionally 'user' and 'fresh'")
    if "clear" in request:
        raise Refused(
            400,
            "'clear' is no longer accepted: dood-proxy deletes nothing. Ask for a new run directory per try "
            "with 'fresh': true (upgrade dood on the Airflow side to the proxy's version)",
        )
    unknown = sorted(set(request) - _FIELDS)
    if unknown:
        raise Refused(400, f"unknown field(s) {shown(unknown)}; expected 'path', and optionally 'user' and 'fresh'")
    fresh = request.get("fresh", False)
    if not isinstance(fresh, bool):
        raise Refused(400, f"fresh must be true or false, got {shown(fresh)}")
    path, root = _check_path(request.get("path"), policy)
    owner, group = _check_user(request.get("user"), policy, host_gid)
    if owner is not None:
        _check_writable_place(path, policy)
    return DirectoryRequest(path=path, root=root, owner=owner, fresh=fresh, group=group)


def _check_writable_place(path: str, policy: Policy) -> None:
    """Where a leaf (a directory containers write) may be, and so where a checkpoint may be removed: never under
    a read-only root, never above a root."""
    for read_only in policy.read_only_host_roots:
        if under(path, read_only):
            raise Refused(403, f"path {path} lies under the read-only root {read_only}: no container may write there")
    inside = [r for r in (*policy.allowed_host_roots, *policy.read_only_host_roots) if r != path and under(r, path)]
    if inside:
        raise Refused(
            403,
            f"path {path} holds the root {inside[0]}: a directory containers write may not lie above a root "
            "(they could replace what is in it)",
        )


def _check_path(path: Any, policy: Policy) -> tuple[str, str]:
    if not isinstance(path, str):
        raise Refused(400, f"path must be a string (an absolute host path), got {shown(path)}")
    if len(path) > MAX_PATH_CHARS:
        raise Refused(400, f"path is {len(path)} characters long; at most {MAX_PATH_CHARS} are accepted")
    if not path.isprintable():
        raise Refused(400, f"path {shown(path)} holds a control character; names may hold only {NAME_CHARACTERS}")
    clean = clean_path(path) if path.startswith("/") else ""
    if not clean or clean != (path.rstrip("/") or "/"):
        raise Refused(400, f"path {shown(path)} must be an absolute, clean host path (no '..', '.', '//')")
    root = covering_root(clean, policy.allowed_host_roots)
    if root is None:
        raise Refused(
            403, f"path {shown(clean)} lies under none of the allowed roots {sorted(policy.allowed_host_roots)}"
        )
    if clean == root:
        raise Refused(403, f"path {clean} is an allowed root itself; a directory is made below one")
    names = clean[len(root.rstrip("/")) :].strip("/").split("/")
    if len(names) > MAX_DEPTH:
        raise Refused(400, f"path {shown(clean)} is {len(names)} names below its root {root}; at most {MAX_DEPTH} are")
    for name in names:
        if not _NAME.fullmatch(name):
            raise Refused(
                400,
                f"path {shown(clean)}: the name {shown(name)} may hold only {NAME_CHARACTERS}, start with a "
                "letter, digit or '_', and be at most 128 characters long",
            )
    return clean, root


def _check_user(
    user: Any, policy: Policy, host_gid: Callable[[int], int | None] | None
) -> tuple[tuple[int, int] | None, int | None]:
    """The owner and the host gid its leaf is given (the owner's gid, or its host gid on a remapping engine)."""
    if user is None:
        return None, None
    owner = parse_user(user)
    if owner is None or user != f"{owner[0]}:{owner[1]}":
        raise Refused(400, f"user {shown(user)} must be numeric 'uid:gid' (e.g. '50000:0'), each at most 4294967294")
    if not policy.user_allowed(user):
        raise Refused(
            403,
            f"user {user} is not one of policy.allowed_users {list(policy.allowed_users)}: a directory for any "
            "other group would hand write access to that group",
        )
    group = owner[1] if host_gid is None else host_gid(owner[1])
    if group is None:
        raise Refused(
            403,
            f"user {user}: the engine remaps user namespaces and gid {owner[1]} is outside its ranges "
            "(/etc/subgid of its --userns-remap user): no host group is that container's group",
        )
    if not can_give_group(group):
        hint = f"user '<uid>:{group}'" if host_gid is None else f"group_add ['{group}'], the remapped gid {owner[1]}"
        raise Refused(
            403,
            f"dood-proxy (uid {os.geteuid()}, groups {sorted({os.getegid(), *os.getgroups()})}) cannot give a "
            f"directory to group {group}: run it with that group (compose: {hint})",
        )
    return owner, group


def shown(value: Any) -> str:
    """`value` for a message or log line: its repr (control characters escaped), at most 120 characters."""
    text = repr(value)
    return text if len(text) <= 120 else f"{text[:117]}..."
