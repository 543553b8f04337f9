"""dood-proxy as the referee of GPU creates: no container through it shares a GPU with another.

dood's launcher names free GPUs itself (`dood.gpu_claims`); code using the raw SDK through the proxy might
not. So a create asking for GPUs is refused (403) when it asks by `Count` (the engine would give GPUs
0…N-1 whoever holds them) or names a GPU that another running (or just created) container holds; the
holdings are read from the engine, over every stack. Checks and creates with GPUs are serialised in the
proxy (one lock), and the `dood.gpus` label is forced to the GPUs the body names, so the next check sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from dood.gpus import COLLISION, GPUS_LABEL, asked, holders, named, referee
from dood.proxy.rules import Refused

if TYPE_CHECKING:
    from dood.proxy.daemon import Daemon


class GpuReferee:
    def __init__(
        self, daemon: Daemon, *, created_hold_seconds: float = 120, probe_images: tuple[str, ...] = ()
    ) -> None:
        self.daemon = daemon
        self.probe_images = probe_images  # the policy's gpu_probe_images: discovery's probe may run these
        self.created_hold_seconds = created_hold_seconds
        self._lock: asyncio.Lock | None = None  # made on first use, inside the proxy's event loop

    @contextlib.asynccontextmanager
    async def checked(
        self, canonical: dict[str, Any], prefix: str, name: str | None = None
    ) -> AsyncIterator[None]:
        """Around the upstream create: refuse (403) a GPU request that could collide, label the others."""
        if asked(canonical) is None and not named(canonical):
            yield
            return
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            problems = referee(canonical, await self._holding(prefix), self.probe_images)
            if problems:
                raise Refused(403, f"{COLLISION}: " + "; ".join(problems))
            canonical["Labels"] = {**(canonical.get("Labels") or {}), GPUS_LABEL: ",".join(named(canonical))}
            yield

    async def _holding(self, prefix: str):
        filters = quote(json.dumps({"label": [GPUS_LABEL]}))
        status, body = await self.daemon.call("GET", f"{prefix}/containers/json?all=1&filters={filters}")
        if status != 200:
            raise Refused(502, f"listing the GPU holders failed ({status})")
        try:
            listed = json.loads(body)
        except ValueError:
            raise Refused(502, "the daemon's container list is not readable") from None
        return holders(listed, created_hold_seconds=self.created_hold_seconds)
