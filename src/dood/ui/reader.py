"""Read-only Docker calls for the UI: list dood's containers, inspect, one stats sample, a bounded log tail.

Meant for `dood-proxy --read-only` (docs/ui.md): only these calls are made, so the api-server never holds
create rights. Which endpoints: `dood.ui.every_host` (the main host's, and each host's `ui_docker`).

A page of many containers stays fast: one list call; inspect only for containers that are running or have
ended (created ones show nothing an inspect would add), cached by (id, state) since a container's
configuration never changes and an ended one's outcome neither; stats only for running ones, sampled in the
background. A stats sample waits for the daemon's next collection tick (about 1 s on dockerd 20.10, even
with `one_shot`), so a page never waits for all of them: it waits at most `STATS_BUDGET_SECONDS` and shows
the latest sample of each container (a row without one yet shows none; the page refreshes every few seconds).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import astuple
from typing import Any

from dood.engine.security import EngineSecurity
from dood.lifecycle.outcome import ENDED
from dood.naming import MANAGED_LABEL
from dood.ui.samples import CpuReading, Usage, cpu_reading, usage

LOG_TAIL_LINES = 200
LOG_LINE_CHARS = 2000
_WORKERS = 32  # inspects and image lookups: short I/O waits, many at once
_CACHE = 2048
#: How long a page waits for stats samples it asked for; later ones show on its next refresh.
STATS_BUDGET_SECONDS = 0.4
#: A sample younger than this is shown as it is, not asked again.
STATS_FRESH_SECONDS = 3.0
#: Samples asked at once: each mostly waits for the daemon's tick, so many share one tick.
_STATS_WORKERS = 64


class _Lru:
    def __init__(self, capacity: int = _CACHE) -> None:
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.capacity = capacity

    def get(self, key: Any) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
            return self._items.get(key)

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)


class EngineReader:
    """What the UI reads from one Docker engine."""

    def __init__(self, api) -> None:
        self.api = api
        self._inspected = _Lru()
        self._images = _Lru()
        self._cpu: _Lru = _Lru()
        self._pool = ThreadPoolExecutor(_WORKERS, thread_name_prefix="dood-ui")
        self._samples = _Lru()  # container id -> (monotonic time, Usage)
        self._sampling: dict[str, Future] = {}
        self._sampling_lock = threading.Lock()
        self._stats_pool = ThreadPoolExecutor(_STATS_WORKERS, thread_name_prefix="dood-ui-stats")

    @classmethod
    def from_endpoint(cls, endpoint, url: str | None = None) -> EngineReader:
        """A reader of the engine behind this config endpoint (`url` in place of its own, when given), with
        the same client and TLS as every other dood process (`dood.engine.target.DockerTarget`)."""
        from dood.engine.target import DockerTarget

        target = DockerTarget.of(endpoint)
        if url:
            target = DockerTarget(url, *astuple(target)[1:])
        return cls(target.client(timeout_seconds=15))

    def find(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        """`docker ps -a` with these filters (the list call's entries)."""
        return self.api.containers(all=True, filters=filters)

    def containers(self) -> list[dict[str, Any]]:
        """Every container carrying `dood.managed=true`, any state (the list call's entries)."""
        return self.api.containers(all=True, filters={"label": [f"{MANAGED_LABEL}=true"]})

    def inspect(self, container_id: str, state: str) -> dict[str, Any] | None:
        key = (container_id, state)
        found = self._inspected.get(key)
        if found is None:
            import docker.errors

            try:
                found = self.api.inspect_container(container_id)
            except docker.errors.NotFound:
                return None
            self._inspected.put(key, found)
        return found

    def inspect_many(self, entries: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Inspect of the ended containers among these list entries (exit code, OOM), in parallel: what a
        live one shows comes from the list entry, its labels (GPUs) and its stats."""
        wanted = [e for e in entries if e.get("State") in ENDED]
        results = self._pool.map(lambda e: (e["Id"], self.inspect(e["Id"], e.get("State", ""))), wanted)
        return {cid: found for cid, found in results if found is not None}

    def usage_many(self, container_ids: Iterable[str], budget: float = STATS_BUDGET_SECONDS) -> dict[str, Usage]:
        """CPU % (against this process' previous sample) and memory of running containers: the latest sample
        of each. Stale samples are renewed in the background; only for a container without any sample yet
        does the page wait, at most `budget` seconds."""
        ids = list(container_ids)
        now = time.monotonic()
        first: list[Future] = []
        with self._sampling_lock:
            for cid in ids:
                cached = self._samples.get(cid)
                if cached is not None and now - cached[0] < STATS_FRESH_SECONDS:
                    continue
                future = self._sampling.get(cid)
                if future is None:
                    future = self._sampling[cid] = self._stats_pool.submit(self._sample, cid)
                if cached is None:
                    first.append(future)
        if first:
            wait(first, timeout=budget)
        found = {cid: self._samples.get(cid) for cid in ids}
        return {cid: sample[1] for cid, sample in found.items() if sample is not None}

    def _sample(self, container_id: str) -> None:
        try:
            self._samples.put(container_id, (time.monotonic(), self.usage(container_id)))
        finally:
            with self._sampling_lock:
                self._sampling.pop(container_id, None)

    def usage(self, container_id: str) -> Usage:
        import docker.errors

        try:
            sample = self.api.stats(container_id, stream=False, one_shot=True)
        except (docker.errors.DockerException, ValueError):
            return Usage(None, None, None)
        before: CpuReading | None = self._cpu.get(container_id)
        now = cpu_reading(sample)
        if now is not None:
            self._cpu.put(container_id, now)
        return usage(sample, before)

    def log_tail(self, container_id: str, lines: int = LOG_TAIL_LINES) -> list[str]:
        """The last `lines` lines of the container's output (stdout and stderr), each as a terminal shows it
        and cut to a bounded length: lines end at newlines only (Docker's `tail` counts those), a carriage
        return overwrites the start of its line (a tqdm bar is one line, in its last state), colours are
        dropped and every other control or bidi override is made visible (`dood.lifecycle.logs.inert`, as in the task
        log)."""
        from dood.lifecycle.logs import inert

        raw = self.api.logs(container_id, stdout=True, stderr=True, stream=False, follow=False, tail=lines)
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
        split = text.split("\n")
        if split and split[-1] == "":
            split.pop()
        return [inert(line)[:LOG_LINE_CHARS] for line in split[-lines:]]

    def image_size(self, reference: str) -> int | None:
        size = self._images.get(reference)
        if size is None:
            import docker.errors

            try:
                size = int(self.api.inspect_image(reference).get("Size") or 0)
            except (docker.errors.APIError, docker.errors.NotFound):
                return None
            self._images.put(reference, size)
        return size

    def image_disk(self, references: Iterable[str]) -> int:
        """Bytes the distinct images behind these references take (each counted once; unknown ones left out)."""
        sizes = self._pool.map(self.image_size, sorted(set(references)))
        return sum(size for size in sizes if size)

    def host(self) -> dict[str, Any]:
        info = self.api.info()
        keep = ("Name", "ServerVersion", "NCPU", "MemTotal", "OperatingSystem")
        facts = {key: info.get(key) for key in keep}
        facts["UserNamespaces"] = EngineSecurity.from_info(info).user_namespaces()  # container uids = host uids?
        return facts
