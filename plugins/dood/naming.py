"""Deterministic container names and ownership labels.

The name is a pure function of (dag_id, task_id, run_id, map_index, try_number): unique across retries
and backfill runs, stable so another process can find the container again. Labels are the durable
record of ownership; nothing is ever decided from the name alone.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

LABEL_PREFIX = "dood."
MANAGED_LABEL = "dood.managed"
#: Which deployment (stack) launched a container: two stacks sharing a Docker host never see, adopt, stop
#: or remove each other's containers. Forced by a stack's dood-proxy.
STACK_LABEL = "dood.stack"
DEFAULT_STACK = "dood"
STACK_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
MAX_NAME_LENGTH = 63  # fits a DNS label, which Docker uses for the container's hostname too
_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]+")


@dataclass(frozen=True)
class TaskIdentity:
    """Which task instance try a container belongs to."""

    dag_id: str
    task_id: str
    run_id: str
    map_index: int = -1
    try_number: int = 1
    stack: str = DEFAULT_STACK

    @classmethod
    def from_context(cls, context, stack: str = DEFAULT_STACK) -> TaskIdentity:
        ti = context["ti"]
        return cls(
            dag_id=ti.dag_id,
            task_id=ti.task_id,
            run_id=ti.run_id,
            map_index=ti.map_index if ti.map_index is not None else -1,
            try_number=ti.try_number or 1,
            stack=stack,
        )

    def labels(self) -> dict[str, str]:
        """The ownership labels every container we launch carries."""
        return {
            MANAGED_LABEL: "true",
            STACK_LABEL: self.stack,
            "dood.dag_id": self.dag_id,
            "dood.task_id": self.task_id,
            "dood.run_id": self.run_id,
            "dood.map_index": str(self.map_index),
            "dood.try_number": str(self.try_number),
        }

    def task_labels(self, task_id: str | None = None) -> dict[str, str]:
        """Labels shared by every try of this task instance, or of `task_id` in the same run and stack
        (for finding earlier tries, or an upstream task's container)."""
        labels = self.labels()
        del labels["dood.try_number"]
        if task_id is not None:
            labels["dood.task_id"] = task_id
        return labels

    def container_name(self) -> str:
        """`dood-<dag>-<task>[-m<idx>]-t<try>-<hash>`: readable, Docker-valid, at most 63 characters."""
        parts = [self.dag_id, self.task_id, self.run_id, str(self.map_index), str(self.try_number)]
        if self.stack != DEFAULT_STACK:  # two stacks on one host, same dag and run ids: two names
            parts.append(self.stack)
        digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:10]
        suffix = (f"-m{self.map_index}" if self.map_index >= 0 else "") + f"-t{self.try_number}-{digest}"
        readable = f"{_slug(self.dag_id)}-{_slug(self.task_id)}"
        room = MAX_NAME_LENGTH - len("dood-") - len(suffix)
        return f"dood-{readable[:room].rstrip('-_.')}{suffix}"


def _slug(text: str) -> str:
    return _UNSAFE.sub("-", text).strip("-_.") or "x"


def check_user_labels(labels: dict[str, str], field: str = "labels") -> dict[str, str]:
    """User labels may not forge ownership: the `dood.` namespace is ours."""
    reserved = sorted(key for key in labels if key.startswith(LABEL_PREFIX))
    if reserved:
        from dood.exceptions import DoodConfigError

        raise DoodConfigError(
            f"{field}: keys {reserved} use the reserved '{LABEL_PREFIX}' prefix; choose another prefix."
        )
    return {str(k): str(v) for k, v in labels.items()}
