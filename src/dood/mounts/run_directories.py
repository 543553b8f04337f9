"""The directories a launched container writes (run directory, partition, model directory), made safely.

Bind sources must sit below directories nobody untrusted can change (`dood.mounts.source_safety`), so the Airflow
side never makes them world-writable and never writes the host tree above them. Behind dood-proxy the
proxy makes them (`POST /dood/v1/directories`): Airflow's user then needs no write access to the data
root at all. With the raw socket, the process holding it is as trusted as the proxy, and makes them itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from dood.exceptions import DoodConfigError, DoodError
from dood.mounts import checkpoints
from dood.mounts.source_safety import LeafConflict, UnsafePath, make_leaf, make_skeleton, unsafe_bind_sources

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from docker import APIClient

    from dood.mounts.mount_map import MountMap
    from dood.policy import Policy

log = logging.getLogger(__name__)
#: The user launched containers run as when neither the task nor `defaults.user` names one and the
#: Airflow process is root: the Airflow image's own `airflow` user (uid 50000, group 0).
FALLBACK_USER = "50000:0"
_PROXY_INFO: dict[str, dict[str, Any] | None] = {}  # Docker endpoint -> what dood-proxy says of itself there
#: How long a request waits out dood-proxy's directories budget (429, Retry-After) before it fails.
BUDGET_PATIENCE_SECONDS = 600.0
#: The longest single wait a Retry-After is taken for (a proxy's answer is bounded by what we accept).
_LONGEST_WAIT = 30.0


def proxy_info(api: APIClient, endpoint: str) -> dict[str, Any] | None:
    """What dood-proxy says of itself (`GET /dood/v1/info`: its stack, its host, its API), or None where the
    endpoint is a Docker daemon (it answers 404). Asked once per endpoint (its configured URL: every unix
    socket has the same `base_url`) and process."""
    if endpoint not in _PROXY_INFO:
        try:
            answer = api.get(f"{api.base_url}/dood/v1/info", timeout=10)
            info = answer.json() if answer.status_code == 200 else None
        except ValueError:
            info = None
        _PROXY_INFO[endpoint] = info if isinstance(info, dict) and info.get("proxy") == "dood-proxy" else None
    return _PROXY_INFO[endpoint]


def default_user() -> str:
    """This process's `uid:gid` when it is not root (what it writes, the container can read, and back)."""
    uid = os.geteuid()
    return f"{uid}:{os.getegid()}" if uid != 0 else FALLBACK_USER


def numeric_owner(user: str | None) -> tuple[int, int] | None:
    """`uid:gid` of a numeric non-root user (gid 0 when not given, as Docker does); None otherwise."""
    uid, _, gid = str(user or "").partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()) or int(uid) == 0:
        return None
    return int(uid), int(gid or 0)


class HostDirectories:
    """Makes directories for containers: through dood-proxy when Docker is reached through it, else here."""

    def __init__(self, api: APIClient, policy: Policy, mount_map: MountMap, *, through_proxy: bool) -> None:
        self.api = api
        self.policy = policy
        self.mount_map = mount_map
        self.through_proxy = through_proxy

    def for_container(self, airflow_path: str, user: str | None, *, fresh: bool = False, what: str) -> str:
        """Make `airflow_path` a directory the container's user writes (a leaf); returns its host path.

        With `fresh` (a run directory: one per try, named after its container) it must be new, or empty: what
        an earlier attempt with the same name left is never removed, and never read as this try's result
        (`DoodError` then; a new try gets a directory of its own). A root or named user (only with
        policy.allow_root_user) gets a directory only root writes."""
        host_path = self.mount_map.to_host(airflow_path, what)
        owner = numeric_owner(user)
        request: dict[str, Any] = {"path": host_path}
        if owner is not None:
            request["user"] = f"{owner[0]}:{owner[1]}"
        if fresh:
            request["fresh"] = True
        self._make(airflow_path, request, what)
        return host_path

    def for_input(self, airflow_path: str, *, what: str) -> str:
        """Make `airflow_path` (if missing) a directory only trusted users write; returns its host path."""
        host_path = self.mount_map.to_host(airflow_path, what)
        self._make(airflow_path, {"path": host_path}, what)
        return host_path

    def for_checkpoint(self, airflow_root: str, key: checkpoints.CheckpointKey, user: str | None, *, what: str) -> str:
        """Make (or find, whatever it holds) the checkpoint directory of `key` below `airflow_root`, a leaf the
        container's user writes; returns its host path. Behind dood-proxy the proxy derives the directory from
        the task instance and its own stack (`kind: checkpoint`); the answer must be the path derived here."""
        host_root = self.mount_map.to_host(airflow_root, what)
        expected = checkpoints.checkpoint_path(host_root, key)
        owner = numeric_owner(user)
        if owner is None:
            raise DoodConfigError(
                f"{what}: a checkpoint directory is written by the container's user, which must be a numeric "
                f"non-root 'uid:gid' (got {user!r}); set user= or defaults.user"
            )
        if self.through_proxy:
            request = {
                "kind": "checkpoint",
                "root": host_root,
                "task": key.to_request(),
                "user": f"{owner[0]}:{owner[1]}",
            }
            answer = self._ask_proxy(request, what, path=expected)
            if answer.get("path") != expected:
                raise DoodError(
                    f"{what}: dood-proxy made the checkpoint directory {answer.get('path')!r}, not {expected!r}: "
                    "its stack differs from the one this process uses (DoodHook.stack), or it is older than this dood "
                    "(dood-proxy API 4 names checkpoints run-...: upgrade the proxy)"
                )
            return expected
        roots = _local_roots(airflow_root, host_root, self.policy.allowed_host_roots)
        with _said(what, "the checkpoint directory", below=airflow_root):
            checkpoints.open_checkpoint(airflow_root, key, roots, gid=owner[1])
        return expected

    def finish_checkpoint(
        self, airflow_root: str, key: checkpoints.CheckpointKey, *, keep: int, what: str
    ) -> checkpoints.Finished:
        """The task succeeded: remove its checkpoint directory, or keep it among the task's `keep` newest
        (`dood.mounts.checkpoints.finish_checkpoint`); host paths in the answer."""
        host_root = self.mount_map.to_host(airflow_root, what)
        if self.through_proxy:
            request = {
                "kind": "checkpoint",
                "root": host_root,
                "task": key.to_request(),
                "action": "finish",
                "keep": keep,
            }
            answer = self._ask_proxy(request, what, path=checkpoints.checkpoint_path(host_root, key))
            return checkpoints.Finished(
                answer.get("kept"), tuple(answer.get("removed") or ()), tuple(answer.get("problems") or ())
            )
        roots = _local_roots(airflow_root, host_root, self.policy.allowed_host_roots)
        try:
            done = checkpoints.finish_checkpoint(airflow_root, key, roots, keep=keep)
        except (UnsafePath, OSError) as exc:
            raise DoodError(f"{what}: cannot finish the checkpoint directory: {exc}") from None
        local = airflow_root.rstrip("/")

        def host(path: str) -> str:
            return host_root.rstrip("/") + path[len(local) :] if path.startswith(local + "/") else path

        return checkpoints.Finished(
            host(done.kept) if done.kept else None,
            tuple(host(p) for p in done.removed),
            tuple(p.replace(local + "/", host_root.rstrip("/") + "/") for p in done.problems),
        )

    def check_binds(self, host_config: Mapping[str, Any], subject: str) -> None:
        """Refuse bind sources someone untrusted could re-point, where this process sees host paths.

        Behind dood-proxy the proxy checks (and again at start); with the raw socket this is a guard
        against mistakes only: whoever holds the socket can do anything anyway (docs/security.md)."""
        if self.through_proxy or not self.mount_map.identity:
            return
        problems = unsafe_bind_sources(host_config, self.policy.allowed_host_roots)
        if problems:
            listing = "\n".join(f"  - {p}" for p in problems)
            raise DoodConfigError(f"{subject}: a bind source could be re-pointed by someone untrusted:\n{listing}")

    def _make(self, airflow_path: str, request: dict[str, Any], what: str) -> None:
        if self.through_proxy:
            self._ask_proxy(request, what)
            return
        roots = _local_roots(airflow_path, request["path"], self.policy.allowed_host_roots)
        fresh = bool(request.get("fresh"))
        with _said(what, airflow_path):
            if "user" in request:
                gid = int(request["user"].split(":")[1])
                make_leaf(airflow_path, roots, gid=gid, fresh=fresh)
            else:
                make_skeleton(airflow_path, roots, fresh=fresh)

    def _ask_proxy(self, request: dict[str, Any], what: str, *, path: str | None = None) -> dict[str, Any]:
        """POST the request to dood-proxy; a 429 (its directories budget) is waited out, as it says. Returns
        its answer. `path`: what the request is about, for messages (a checkpoint names no path)."""
        path = path or request["path"]
        deadline = time.monotonic() + BUDGET_PATIENCE_SECONDS
        while True:
            answer = self.api.post(f"{self.api.base_url}/dood/v1/directories", json=request, timeout=30)
            if answer.status_code != 429:
                break
            wait = _retry_after(answer)
            if time.monotonic() + wait > deadline:
                raise DoodError(
                    f"{what}: dood-proxy kept refusing to make {path} for {BUDGET_PATIENCE_SECONDS:.0f} s: "
                    f"{_message(answer)}. Something asks it for directories far faster than tasks do; its log "
                    "names the requests"
                )
            log.info("%s: dood-proxy's directories budget is spent; asking again in %.0f s", what, wait)
            time.sleep(wait)
        if answer.status_code == 409:  # an earlier attempt's leftovers: a new try has a directory of its own
            raise DoodError(f"{what}: dood-proxy cannot prepare {path}: {_message(answer)}")
        if answer.status_code != 200:
            raise DoodConfigError(f"{what}: dood-proxy cannot prepare {path}: {_message(answer)}")
        try:
            body = answer.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}


def _local_roots(airflow_path: str, host_path: str, host_roots: Iterable[str]) -> list[str]:
    """The Airflow-side directory that is the host root covering `host_path` (same tail, other prefix)."""
    for root in sorted(host_roots, key=len, reverse=True):
        if host_path == root or host_path.startswith(root.rstrip("/") + "/"):
            tail = host_path[len(root.rstrip("/")) :]
            if tail and airflow_path.endswith(tail):
                return [airflow_path[: -len(tail)] or "/"]
            return [airflow_path] if not tail else [os.path.dirname(airflow_path)]
    raise DoodConfigError(f"{host_path} lies outside policy.allowed_host_roots {list(host_roots)}; list its root there")


def _retry_after(answer) -> float:
    """The seconds a 429 asks to wait (Retry-After), within 1 and `_LONGEST_WAIT`."""
    try:
        seconds = float(answer.headers.get("Retry-After", "1"))
    except ValueError:
        seconds = 1.0
    return min(seconds, _LONGEST_WAIT) if seconds >= 1.0 else 1.0  # NaN too: 1 s


def _message(answer) -> str:
    try:
        return str(answer.json().get("message"))
    except ValueError:
        return answer.text[:300]


@contextlib.contextmanager
def _said(what: str, subject: str, *, below: str | None = None) -> Iterator[None]:
    """Making `subject` on the raw socket's side: an unsafe path is a config error, a conflict a run's error, a
    permission the process's (it holds the socket but may not write below `below`), each saying the fix."""
    try:
        yield
    except UnsafePath as exc:
        raise DoodConfigError(f"{what}: cannot prepare {subject}: {exc}") from None
    except LeafConflict as exc:
        raise DoodError(f"{what}: cannot prepare {subject}: {exc}") from None
    except PermissionError as exc:
        raise DoodConfigError(
            f"{what}: cannot prepare {subject}{f' below {below}' if below else ''} ({exc.strerror}). This process "
            "holds the raw Docker socket but may not write there: run it as the owner of the data root, or put "
            "dood-proxy in front of the socket (it makes the directories)."
        ) from None
