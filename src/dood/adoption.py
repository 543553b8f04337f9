"""Reattach: a retry adopts the container of an earlier try of its task instance instead of starting a second.

Adoptable: one still running that nobody has begun to stop, or one that succeeded while no worker was
watching (its result is kept). Ownership passes with it: the earlier try's runner, if it still lives, was
orphaned (its supervisor is gone, or Airflow would not have started this try), so it can no longer reach
Airflow and therefore never stops or removes the container (`dood.owner`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from dood.completion import ContainerHandle
from dood.naming import TaskIdentity
from dood.owner import being_ended

if TYPE_CHECKING:
    from dood.config import DoodConfig
    from dood.hooks.dood import DoodHook
    from dood.logs import TaskLog
    from dood.placement import Placement

log = logging.getLogger(__name__)

ADOPTION_SETTLE_SECONDS = 6  # > the triggerer's default 5 s heartbeat, in which it passes a user's kill on


def adoptable(
    hook: DoodHook, identity: TaskIdentity, config: DoodConfig, logger: TaskLog = log
) -> ContainerHandle | None:
    """The earlier try's container this try takes over, on this host, or None (start a new one); said in
    `logger` (the task's log). A first try has no earlier try (Airflow numbers a cleared task's next run
    as a new try), so it asks the engine nothing."""
    if identity.try_number <= 1:
        return None
    earlier = [
        c
        for c in hook.find_containers(identity.task_labels())  # this task instance's, on this host
        if TaskIdentity.from_labels(c["Labels"]).try_number != identity.try_number
    ]
    if any(c["State"] == "running" for c in earlier):
        # a kill path of the earlier try (a clear: the triggerer cancels its trigger on its next sync) may
        # not have signalled it yet: give it that long before deciding (only retries ever wait here)
        time.sleep(ADOPTION_SETTLE_SECONDS)
        earlier = [c for c in hook.find_containers(identity.task_labels()) if c["Id"] in {e["Id"] for e in earlier}]
    # one someone began to stop (a clear, a timeout: `kill` events) is being ended, not adoptable
    running = [c for c in earlier if c["State"] == "running" and not being_ended(hook.api, c)]
    succeeded = [
        c for c in earlier if c["State"] == "exited" and hook.api.inspect_container(c["Id"])["State"]["ExitCode"] == 0
    ]
    if not (running or succeeded):
        return None
    adopted = max(running or succeeded, key=lambda c: c["Created"])
    name = adopted["Names"][0].lstrip("/")
    logger.info(
        "Reattaching to container %s of try %s (%s) instead of starting another (reattach=True).",
        name,
        TaskIdentity.from_labels(adopted["Labels"]).try_number,
        adopted["Status"],
    )
    return ContainerHandle.of(adopted["Id"], name, config.runs_root, config.host)


def adoptable_elsewhere(
    config: DoodConfig, identity: TaskIdentity, placement: Placement | None, logger: TaskLog = log
) -> tuple[ContainerHandle, DoodConfig] | None:
    """With a placement on several hosts (a shared queue), a retry may land on another host than the try it
    follows: the earlier try's container, on any other host of the placement, with the view of that host as
    this process reaches it (its network endpoint), or None. One host, or none: nothing to look at."""
    from dood.hooks.dood import DoodHook
    from dood.hosts import remote_view

    if placement is None or identity.try_number <= 1:
        return None
    for name in placement.hosts:
        if name == config.host:
            continue
        view = remote_view(config, name)
        handle = adoptable(DoodHook(view), replace(identity, host=name), view, logger)
        if handle is not None:
            logger.info("The earlier try's container runs on host %s: following it there.", name)
            return handle, view
    return None
