"""dood-proxy's own endpoints (`/dood/v1/...`): directories for containers, made by the one trusted party.

Airflow's task code and the launched containers run as non-root users and cannot write the directories
above a bind source (`dood.hostpaths`). So a run's directories (its run directory, its partition, a model
directory) are made here, by the proxy, on request: below an allowed root, owned by the container's user,
and never by changing what exists. Nothing here talks to the Docker daemon.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from dood.hostpaths import UnsafePath, make_leaf, make_skeleton, trusted_uids
from dood.policy.model import Policy
from dood.policy.paths import clean_path
from dood.proxy.rules import Refused

API_VERSION = 1
_USER = re.compile(r"^(\d{1,10}):(\d{1,10})$")
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
MAX_CLEAR = 8


def info() -> dict[str, Any]:
    """What `GET /dood/v1/info` answers: that this is dood-proxy, and whom it trusts."""
    return {"proxy": "dood-proxy", "api": API_VERSION, "trusted_uids": sorted(trusted_uids())}


def make_directory(request: Any, policy: Policy) -> dict[str, Any]:
    """`POST /dood/v1/directories` with `{"path", "user": "uid:gid", "clear": [names]}`.

    With `user`: a leaf the container writes through its group (mode 2770; the proxy stays its owner).
    Without: a directory only trusted users write (an input root, read-only for containers). An existing
    directory is kept as it is.
    """
    if not isinstance(request, Mapping) or set(request) - {"path", "user", "clear"}:
        raise Refused(400, "expected a JSON object with 'path', and optionally 'user' and 'clear'")
    path = request.get("path")
    if not isinstance(path, str) or not path.startswith("/") or clean_path(path) != path.rstrip("/"):
        raise Refused(400, f"path {path!r} must be an absolute, clean host path")
    clear = request.get("clear") or []
    if not isinstance(clear, list) or len(clear) > MAX_CLEAR or not all(_is_plain(n) for n in clear):
        raise Refused(400, f"clear must be a list of at most {MAX_CLEAR} plain file names")
    user = request.get("user")
    try:
        if user is None:
            created = make_skeleton(path, policy.allowed_host_roots)
        else:
            match = _USER.match(user) if isinstance(user, str) else None
            if match is None:
                raise Refused(400, f"user {user!r} must be numeric 'uid:gid'")
            if any(path == r or path.startswith(r.rstrip("/") + "/") for r in policy.read_only_host_roots):
                raise Refused(403, f"{path} lies under a read-only root: no container may write a directory there")
            created = make_leaf(path, policy.allowed_host_roots, gid=int(match.group(2)), clear=clear)
    except UnsafePath as exc:
        raise Refused(403, str(exc)) from None
    return {"path": path, "created": created}


def _is_plain(name: Any) -> bool:
    return isinstance(name, str) and bool(_PLAIN_NAME.match(name)) and name not in (".", "..")
