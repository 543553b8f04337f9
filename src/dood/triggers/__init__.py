"""Triggers: async waiting in the triggerer, so a long container run holds no worker slot.

- `container`: `DoodContainerTrigger`, a container's end (and its deadline) without a worker slot.
- `gpus`: `DoodGpuTrigger`, a GPU waiter's ticket kept alive until it may be its turn.
- `event_hub`: one event stream and one session per Docker endpoint, shared by every wait of a triggerer;
  `events`: an endpoint's raw container event stream.
"""

from __future__ import annotations

from dood.triggers.container import DoodContainerTrigger

__all__ = ["DoodContainerTrigger"]
