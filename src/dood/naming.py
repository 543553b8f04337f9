"""Deterministic container names and ownership labels.

The name is a pure function of (dag_id, task_id, run_id, map_index, try_number): unique across retries
and backfill runs, stable so another process can find the container again. Labels are the durable
record of ownership; nothing is ever decided from the name alone.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dood.exceptions import DoodConfigError

LABEL_PREFIX = "dood."
#: A pipeline's DAG id is this prefix and the pipeline's name (`dood.dag_factory`); the UI reads it back
#: (`dood.ui.metrics`) without importing the DAG factory and, through it, the operators.
DAG_ID_PREFIX = "dood_"
MANAGED_LABEL = "dood.managed"
#: Which deployment (stack) launched a container: two stacks sharing a Docker host never see, adopt, stop
#: or remove each other's containers. Forced by a stack's dood-proxy.
STACK_LABEL = "dood.stack"
DEFAULT_STACK = "dood"
STACK_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
#: Which Docker host (its name under `hosts:` in the config) a container was launched on, when the deployment
#: has several; forced by that host's dood-proxy. Reattach, the sensor and the janitor look only on their host.
HOST_LABEL = "dood.host"
HOST_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
DAG_ID_LABEL = "dood.dag_id"
TASK_ID_LABEL = "dood.task_id"
RUN_ID_LABEL = "dood.run_id"
MAP_INDEX_LABEL = "dood.map_index"
TRY_NUMBER_LABEL = "dood.try_number"
MAX_NAME_LENGTH = 63  # fits a DNS label, which Docker uses for the container's hostname too
#: Bytes of SHA-256 in a container's name (and so its run directory's): 128 bits, as no search finds two
#: identities sharing them (10 hex, 40 bits, were within reach).
NAME_DIGEST_BYTES = 16
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
    host: str | None = None  # the Docker host's name when the deployment has several (`hosts:`)

    @classmethod
    def from_context(cls, context, stack: str = DEFAULT_STACK, host: str | None = None) -> TaskIdentity:
        ti = context["ti"]
        return cls(
            dag_id=ti.dag_id,
            task_id=ti.task_id,
            run_id=ti.run_id,
            map_index=ti.map_index if ti.map_index is not None else -1,
            try_number=ti.try_number or 1,
            stack=stack,
            host=host,
        )

    @classmethod
    def from_labels(cls, labels: Mapping[str, str]) -> TaskIdentity:
        """The identity a container's labels record (the inverse of `labels()`); KeyError when a label of
        the task instance (dag, task, run) is missing, i.e. the container is not a task's."""
        return cls(
            dag_id=labels[DAG_ID_LABEL],
            task_id=labels[TASK_ID_LABEL],
            run_id=labels[RUN_ID_LABEL],
            map_index=_int(labels.get(MAP_INDEX_LABEL), -1),
            try_number=_int(labels.get(TRY_NUMBER_LABEL), 1),
            stack=labels.get(STACK_LABEL) or DEFAULT_STACK,
            host=labels.get(HOST_LABEL) or None,
        )

    def labels(self) -> dict[str, str]:
        """The ownership labels every container we launch carries."""
        labels = {
            MANAGED_LABEL: "true",
            STACK_LABEL: self.stack,
            DAG_ID_LABEL: self.dag_id,
            TASK_ID_LABEL: self.task_id,
            RUN_ID_LABEL: self.run_id,
            MAP_INDEX_LABEL: str(self.map_index),
            TRY_NUMBER_LABEL: str(self.try_number),
        }
        if self.host is not None:
            labels[HOST_LABEL] = self.host
        return labels

    def task_labels(self, task_id: str | None = None) -> dict[str, str]:
        """Labels shared by every try of this task instance, or of `task_id` in the same run, stack and host
        (for finding earlier tries, or an upstream task's container)."""
        labels = self.labels()
        del labels[TRY_NUMBER_LABEL]
        if task_id is not None:
            labels[TASK_ID_LABEL] = task_id
        return labels

    def container_name(self) -> str:
        """`dood-<dag>-<task>[-m<idx>]-t<try>-<hash>`: readable, Docker-valid, at most 63 characters.

        The hash is 128 bits of SHA-256 over the whole identity (base32, 26 characters: the same bits as 32
        hex, 6 more characters left to read): it alone keeps names apart, as the readable part is cut and
        lossy. The task keeps at least half of the room left, so two tasks of a long dag id stay readable.
        """
        parts = [self.dag_id, self.task_id, self.run_id, str(self.map_index), str(self.try_number)]
        if self.stack != DEFAULT_STACK:  # two stacks on one host, same dag and run ids: two names
            parts.append(self.stack)
        digest = hashlib.sha256("\x1f".join(parts).encode()).digest()[:NAME_DIGEST_BYTES]
        suffix = (f"-m{self.map_index}" if self.map_index >= 0 else "") + f"-t{self.try_number}-{_base32(digest)}"
        room = max(MAX_NAME_LENGTH - len("dood-") - len(suffix), 0)
        dag, task = _slug(self.dag_id), _slug(self.task_id)
        if len(dag) + 1 + len(task) > room:
            task = task[: max(room // 2, room - 1 - len(dag))].rstrip("-_.")
            dag = dag[: max(room - 1 - len(task), 0)].rstrip("-_.")
        readable = "-".join(part for part in (dag, task) if part)[:room].rstrip("-_.")
        return f"dood-{readable}{suffix}" if readable else f"dood{suffix}"


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _slug(text: str) -> str:
    return _UNSAFE.sub("-", text).strip("-_.") or "x"


def _base32(digest: bytes) -> str:
    """Lowercase base32 without padding: letters and 2-7, valid in a Docker name and a DNS label."""
    return base64.b32encode(digest).decode().rstrip("=").lower()


def check_user_labels(labels: dict[str, str], field: str = "labels") -> dict[str, str]:
    """User labels may not forge ownership: the `dood.` namespace is ours."""
    reserved = sorted(key for key in labels if key.startswith(LABEL_PREFIX))
    if reserved:
        raise DoodConfigError(
            f"{field}: keys {reserved} use the reserved '{LABEL_PREFIX}' prefix; choose another prefix."
        )
    return {str(k): str(v) for k, v in labels.items()}


def run_env(identity: TaskIdentity, context: Mapping[str, Any]) -> dict[str, str]:
    """Run identity and data interval for the container's environment, so it can key its outputs
    (documented names; `context`: the task's Airflow context)."""

    def iso(key: str) -> str:
        value = context.get(key)
        return value.isoformat() if value is not None else ""

    return {
        "DOOD_DAG_ID": identity.dag_id,
        "DOOD_TASK_ID": identity.task_id,
        "DOOD_RUN_ID": identity.run_id,
        "DOOD_MAP_INDEX": str(identity.map_index),
        "DOOD_TRY_NUMBER": str(identity.try_number),
        "DOOD_LOGICAL_DATE": iso("logical_date"),
        "DOOD_DATA_INTERVAL_START": iso("data_interval_start"),
        "DOOD_DATA_INTERVAL_END": iso("data_interval_end"),
    }
