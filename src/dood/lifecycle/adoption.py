"""Reattach: a retry adopts the container of an earlier try of its task instance instead of starting a second.

Adoptable: one still running that nobody has begun to stop, or one that succeeded while no worker was
watching (its result is kept). Ownership passes with it: the earlier try's runner, if it still lives, was
orphaned (its supervisor is gone, or Airflow would not have started this try), so it can no longer reach
Airflow and therefore never stops or removes the container (`dood.lifecycle.owning_try`).

Only a retry adopts, never the try after a clear: a clear is a user kill. Airflow records it before the
task instance's state changes, in the same write: clearing a task instance that is not running (deferred,
failed, scheduled...) resets its ``max_tries`` to its try number plus its retries, so the first try of the
current series is ``max_tries - retries + 1`` (`first_try`: Airflow's own reckoning in
``get_first_reschedule_date``, spelled once in `dood.mounts.checkpoints.first_try_of`, as a checkpoint directory
lives as long). A container of a try before it belongs to a series a user cleared: it is never adopted,
whether or not the kill path of that try has run (a deferred task's trigger may never run its
``on_kill``: a triggerer down or slow, or, on SQLite, a deleted trigger's id handed to the next try's
trigger, which the triggerer then takes for the old one), and this try ends it (`end_cleared`). A task
cleared while running is RESTARTING, a retry by Airflow's count: its ``on_kill`` ends the container
(`dood.lifecycle.owning_try.being_ended`, and `ADOPTION_SETTLE_SECONDS` for the triggerer's sync).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from dood.engine.target import DockerTarget
from dood.lifecycle.completion import ContainerHandle
from dood.lifecycle.owning_try import being_ended
from dood.lifecycle.teardown import detach
from dood.mounts.checkpoints import first_try_of  # the one spelling of Airflow's formula
from dood.naming import TaskIdentity

if TYPE_CHECKING:
    from collections.abc import Mapping

    from dood.config.model import DoodConfig
    from dood.config.placement import Placement
    from dood.hooks.dood import DoodHook
    from dood.lifecycle.logs import TaskLog

log = logging.getLogger(__name__)

ADOPTION_SETTLE_SECONDS = 6  # > the triggerer's default 5 s heartbeat, in which it passes a user's kill on


def first_try(context: Mapping[str, Any], retries: int | None) -> int:
    """The first try of the task instance's current series: the try after its last clear, else 1. Tries
    before it were cleared by a user (see the module's docstring). 1 when the task instance does not say
    (no ``max_tries``: e.g. a test's stand-in)."""
    ti = context["ti"]
    return first_try_of(getattr(ti, "try_number", None), getattr(ti, "max_tries", None), retries)


def adoptable(
    hook: DoodHook,
    identity: TaskIdentity,
    config: DoodConfig,
    logger: TaskLog = log,
    *,
    since_try: int = 1,
    grace_seconds: int | None = None,
    keep_exited: bool = False,
) -> ContainerHandle | None:
    """The earlier try's container this try takes over, on this host, or None (start a new one); said in
    `logger` (the task's log). Only tries from `since_try` on (`first_try`) are looked at: the containers of
    tries before it were cleared by a user, and are ended (`end_cleared`, with `grace_seconds`, else the
    config's; `keep_exited`: an exited one is left, auto_remove=never). The first try of a series has no
    earlier try to adopt, so it asks the engine nothing when there is no series before it either."""
    if identity.try_number <= 1:
        return None
    mine = [
        c
        for c in hook.find_containers(identity.task_labels())  # this task instance's, on this host
        if TaskIdentity.from_labels(c["Labels"]).try_number != identity.try_number
    ]
    cleared = [c for c in mine if TaskIdentity.from_labels(c["Labels"]).try_number < since_try]
    if cleared:
        grace = config.defaults.stop_grace_period_seconds if grace_seconds is None else grace_seconds
        end_cleared(hook, cleared, config, grace, logger, keep_exited=keep_exited)
    earlier = [c for c in mine if c not in cleared]
    if not earlier:
        return None
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


def end_cleared(
    hook: DoodHook,
    containers: list[dict[str, Any]],
    config: DoodConfig,
    grace_seconds: int,
    logger: TaskLog = log,
    *,
    keep_exited: bool = False,
) -> list[str]:
    """End the containers of tries a user cleared (`docker ps` entries): stop (grace period), then remove,
    in processes that outlive this one (`dood.lifecycle.teardown`), not waited for; one someone already began to stop
    is left to them, an exited one is only removed (left with `keep_exited`). Returns the ids it ended."""
    ended = []
    for container in containers:
        name = container["Names"][0].lstrip("/")
        try_number = TaskIdentity.from_labels(container["Labels"]).try_number
        running = container["State"] != "exited" and container["State"] != "dead"
        if (running and being_ended(hook.api, container)) or (not running and keep_exited):
            continue
        ending = detach(
            DockerTarget.of(config.docker),
            container["Id"],
            grace_seconds if running else 0,
            runs_root=config.runs_root,
            who=f"a clear of its task (try {try_number}), in the next try",
        )
        logger.warning(
            "Container %s of try %s (%s) was cleared by a user: never adopted (a clear is a kill); %s it in pid "
            "%s, which outlives this try.",
            name,
            try_number,
            container["Status"],
            f"stopping (grace {grace_seconds}s), then removing" if running else "removing",
            ending.pid,
        )
        ended.append(container["Id"])
    return ended


def adoptable_elsewhere(
    config: DoodConfig,
    identity: TaskIdentity,
    placement: Placement | None,
    logger: TaskLog = log,
    *,
    since_try: int = 1,
    grace_seconds: int | None = None,
    keep_exited: bool = False,
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
        handle = adoptable(
            DoodHook(view),
            replace(identity, host=name),
            view,
            logger,
            since_try=since_try,
            grace_seconds=grace_seconds,
            keep_exited=keep_exited,
        )
        if handle is not None:
            logger.info("The earlier try's container runs on host %s: following it there.", name)
            return handle, view
    return None
