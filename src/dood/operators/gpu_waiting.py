"""Waiting for GPUs without a worker slot: the deferrable operator's half of `dood.gpus.claims`.

A create that finds too few free GPUs leaves a ticket in the engine (`GpusBusy`); the task defers to
`DoodGpuTrigger`, which fires when the ticket's turn comes (or the deadline passes), and the task resumes in
`execute_after_gpus`: claim, create and run, as `execute` does, with the same ticket and deadline.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowTaskTimeout

from dood.config.model import load_config
from dood.exceptions import DoodError
from dood.gpus.claims import remove_ticket
from dood.gpus.holdings import waiter_of
from dood.hooks.dood import DoodHook
from dood.naming import MANAGED_LABEL, STACK_LABEL
from dood.triggers.gpus import DoodGpuTrigger

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow.sdk import Context

    from dood.config.model import DoodConfig
    from dood.gpus.claims import GpusBusy


class WaitsForGpus:
    """Mixed into `DoodContainerOperator` (which gives `defer`, `execute` and `config_path`)."""

    _gpu_ticket: str | None = None  # the task's place in the GPU queue, once it has waited (deferrable)
    _gpu_deadline: float | None = None  # its execution_timeout's end, carried across that deferral
    if TYPE_CHECKING:  # given by DoodContainerOperator
        config_path: str | None
        defer: Callable[..., Any]
        execute: Callable[..., Any]

    def _defer_for_gpus(self, busy: GpusBusy, config: DoodConfig, body: Mapping[str, Any], spec, deadline) -> None:
        labels = dict(body.get("Labels") or {})
        trigger = DoodGpuTrigger.from_config(
            config,
            ticket=busy.ticket,
            wanted=busy.wanted,  # type: ignore[arg-type] # GpusBusy carries a validated request
            image=spec.image,
            user=spec.user,
            waiter=waiter_of(labels),
            labels={k: v for k, v in labels.items() if k in (MANAGED_LABEL, STACK_LABEL)},
            deadline=deadline,
        )
        self.defer(
            trigger=trigger, method_name="execute_after_gpus", kwargs={"ticket": busy.ticket, "deadline": deadline}
        )

    def execute_after_gpus(
        self, context: Context, event: dict[str, Any], ticket: str | None = None, deadline: float | None = None
    ) -> Any:
        """The GPU trigger fired: it is this task's turn (claim, create and run, as `execute`), or the deadline
        passed (its ticket is already gone)."""
        status = event.get("status")
        if status == "timeout":
            message = event.get("message")
            raise AirflowTaskTimeout(f"No GPUs freed before the task's deadline (execution_timeout): {message}")
        if status != "ready":
            if ticket:
                config = load_config(self.config_path)
                remove_ticket(DoodHook(config).api, ticket)
            raise DoodError(f"Waiting for GPUs failed: {event.get('message')}")
        self._gpu_ticket, self._gpu_deadline = ticket, deadline
        return self.execute(context)
