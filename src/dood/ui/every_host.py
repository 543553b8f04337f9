"""Every Docker host the UI reads, as one reader: the main host's engine and, with `hosts:`, each host's
read-only dood-proxy (`hosts.<name>.ui_docker`), so the DooD page and the Container tab cover every host.

The main endpoint is `$DOOD_UI_DOCKER_URL`, else the config's `docker.url` (in the compose stack the
read-only proxy). A host that does not answer leaves the others on the page, with an error naming it; a host
without `ui_docker` is named as not readable (the api-server never gets a creating proxy's rights).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from concurrent import futures
from typing import Any

from dood.ui.problems import NoEngineAnswered, host_not_counted, why
from dood.ui.reader import STATS_BUDGET_SECONDS, EngineReader
from dood.ui.rows import HOST_KEY
from dood.ui.samples import Usage

log = logging.getLogger(__name__)
_SAMPLERS = futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="dood-ui-samples")  # hosts at once

URL_ENV = "DOOD_UI_DOCKER_URL"
MAIN = ""  # the main host's name here: the one the config's top-level `docker` reaches


class Engines:
    """The readers of every host, by host name (`MAIN` for the top-level `docker`)."""

    def __init__(
        self, readers: dict[str, EngineReader], unreadable: Iterable[str] = (), down: dict[str, str] | None = None
    ) -> None:
        self.readers = readers
        self.unreadable = tuple(unreadable)
        self.down = dict(down or {})  # hosts whose client could not even be made (an API version asked of it)
        self.errors: list[str] = []  # hosts that did not answer the last list, said per host
        self._owner: dict[str, EngineReader] = {}  # container id -> the reader that listed it

    @classmethod
    def from_config(cls) -> Engines:
        import os

        from dood.config.model import load_config

        config = load_config()
        endpoints = {MAIN: (config.docker, os.environ.get(URL_ENV) or None)}
        unreadable = []
        for name, host in config.hosts.items():
            if host.ui_docker is not None:
                endpoints[name] = (host.ui_docker, None)
            elif host.docker.url != config.docker.url:  # the main host named under hosts: already read
                unreadable.append(name)
        readers, down = {}, {}
        for name, (endpoint, url) in endpoints.items():
            try:
                readers[name] = EngineReader.from_endpoint(endpoint, url)
            except Exception as exc:  # noqa: BLE001 - the page shows the other hosts, and says why not this one
                log.warning("dood UI: no client for host %s: %s", name or "main", exc)
                down[name] = why(exc)  # the page's words; the raw text (internal hosts) stays in the log
        return cls(readers, unreadable, down)

    @property
    def several(self) -> bool:
        """Whether the page has a host column: more than one host is configured."""
        return len(self.readers) + len(self.unreadable) + len(self.down) > 1

    def host_names(self) -> list[str]:
        """Every configured host's name (the main one as `MAIN`), read or not."""
        return sorted({*self.readers, *self.unreadable, *self.down})

    def containers(self) -> list[dict[str, Any]]:
        """Every dood container of every host that answers, each entry marked with its host (`HOST_KEY`);
        raises `NoEngineAnswered` only when no host answers. What the page says of a host that did not answer
        is why in words (`dood.ui.problems`); the exception's own text goes to the log."""
        entries, failed = [], {}
        for name, reader in self.readers.items():
            try:
                listed = reader.containers()
            except Exception as exc:  # noqa: BLE001 - one host down must not blank the page
                log.warning("dood UI: host %s did not answer: %s", name or "main", exc)
                failed[name] = why(exc)
                continue
            entries.extend(self._mark(name, reader, listed))
        failed.update(self.down)
        errors = [host_not_counted(name, reason) for name, reason in failed.items()]
        self.errors = errors + [
            f"host {name}: not readable from the UI (give hosts.{name}.ui_docker, its read-only dood-proxy)"
            for name in self.unreadable
        ]
        if not entries and errors and len(errors) >= len(self.readers):
            raise NoEngineAnswered(failed)
        return entries

    def find(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        found = []
        for name, reader in self.readers.items():
            try:
                found.extend(self._mark(name, reader, reader.find(filters)))
            except Exception as exc:  # noqa: BLE001 - the other hosts still answer
                log.warning("dood UI: host %s did not answer: %s", name or "main", exc)
        return found

    def host(self) -> dict[str, Any]:
        """The main host's summary (name, Docker version, CPUs, memory); empty when it cannot be read."""
        main = self.readers.get(MAIN)
        return main.host() if main is not None else {}

    def hosts(self) -> dict[str, dict[str, Any]]:
        """Each readable host's summary (its engine's user namespaces too), by host name; one that does not
        answer is left out (the list call already says so)."""
        found = {}
        for name, reader in self.readers.items():
            try:
                found[name] = reader.host()
            except Exception as exc:  # noqa: BLE001 - the other hosts are still shown
                log.warning("dood UI: host %s did not answer: %s", name or "main", exc)
        return found

    def inspect(self, container_id: str, state: str) -> dict[str, Any] | None:
        return self._reader_of(container_id).inspect(container_id, state)

    def inspect_many(self, entries: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for reader, mine in self._by_reader(list(entries), key=lambda e: e["Id"]):
            found.update(reader.inspect_many(mine))
        return found

    def usage_many(self, container_ids: Iterable[str], budget: float = STATS_BUDGET_SECONDS) -> dict[str, Usage]:
        """Samples of every host at once: the page waits at most `budget`, not once per host."""
        asked = [
            _SAMPLERS.submit(reader.usage_many, ids, budget)
            for reader, ids in self._by_reader(list(container_ids), key=lambda cid: cid)
        ]
        done, _ = futures.wait(asked, timeout=budget + 5)
        found: dict[str, Usage] = {}
        for future in done:
            if future.exception() is None:
                found.update(future.result())
            else:
                log.warning("Container samples of a host: %s", future.exception())
        return found

    def log_tail(self, container_id: str, lines: int | None = None) -> list[str]:
        reader = self._reader_of(container_id)
        return reader.log_tail(container_id) if lines is None else reader.log_tail(container_id, lines)

    def image_disk(self, references: Iterable[str]) -> int:
        """Bytes dood's images take on every host (an image on two hosts takes disk on both)."""
        wanted = sorted(set(references))
        total = 0
        for name, reader in self.readers.items():
            try:
                total += reader.image_disk(wanted)
            except Exception as exc:  # noqa: BLE001 - its rows are still shown
                log.warning("dood UI: host %s did not answer: %s", name or "main", exc)
        return total

    def _mark(self, name: str, reader: EngineReader, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for entry in entries:
            self._owner[entry["Id"]] = reader
            entry[HOST_KEY] = name
        return entries

    def _reader_of(self, container_id: str) -> EngineReader:
        return self._owner.get(container_id) or self.readers.get(MAIN) or next(iter(self.readers.values()))

    def _by_reader(self, items: list, key) -> list[tuple[EngineReader, list]]:
        groups: dict[int, tuple[EngineReader, list]] = {}
        for item in items:
            reader = self._reader_of(key(item))
            groups.setdefault(id(reader), (reader, []))[1].append(item)
        return list(groups.values())


_engines: Engines | None = None
_engines_lock = threading.Lock()


def engines() -> Engines:
    """This process' readers (their caches and the previous CPU samples live as long as the api-server)."""
    global _engines
    with _engines_lock:
        if _engines is not None:
            return _engines
        made = Engines.from_config()
        if not made.down:  # a host whose client failed is tried again on the next request
            _engines = made
        return made
