"""Host paths as the policy reads them: cleaned lexically, and the system paths no mount may touch."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable

#: Host directories that may be neither mounted nor mounted around (an ancestor exposes them too).
SYSTEM_PATHS: tuple[str, ...] = (
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/root",
    "/run",
    "/var/run",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/var/lib/kubelet",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
)


def clean_path(path: str) -> str:
    """Lexically clean an absolute path ('..', '.', repeated slashes), as the kernel would walk it."""
    return "/" + posixpath.normpath("/" + path).lstrip("/") if path else path


def under(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root.rstrip("/") + "/")


def under_any(path: str, roots: Iterable[str]) -> bool:
    return any(under(path, root) for root in roots)


def system_path_conflict(path: str) -> str | None:
    """The system path that `path` is, lies under, or contains; None when it is clear of them all."""
    if path == "/":
        return "/"
    for system in SYSTEM_PATHS:
        if under(path, system) or under(system, path):
            return system
    return None


def socket_like(path: str) -> bool:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name.endswith(".sock") or "docker.sock" in path
