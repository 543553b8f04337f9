"""Triggers: async waiting in the triggerer, so a long container run holds no worker slot."""

from __future__ import annotations

from dood.triggers.container import DoodContainerTrigger

__all__ = ["DoodContainerTrigger"]
