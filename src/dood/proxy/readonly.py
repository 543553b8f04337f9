"""dood-proxy's read-only mode (`dood-proxy --read-only`): for Airflow's api-server, whose UI shows dood's
containers but must never create, start, stop or remove anything.

Only the calls in `READ_ONLY` pass — ping, version, info, the list of dood's containers, and inspect, one
stats sample and a bounded log tail of one of them (never followed, never streamed) — plus inspecting the
image a container runs (the policy's `allowed_images` still applies). Everything else is refused (403)
before the daemon is asked. Ownership is unchanged: a container without `dood.managed=true` is refused by
`ownership` exactly as on the normal listener, and the list is filtered to dood's containers.

What the UI is shown is narrowed too:

* a log tail is at most `MAX_LOG_LINES` lines: no `tail`, `tail=all`, a negative or a larger one asks for
  that many (the daemon reads anything but a number >= 0 as "every line");
* a container's or an image's inspect comes without its environment (`Config.Env`, and an image's
  `ContainerConfig.Env`): `private_environment` is where steps get their secrets, and the UI shows no
  variable. The command line (`Path`, `Args`, `Config.Cmd`, `Config.Entrypoint`, the list's `Command`)
  stays: the UI shows it, and it is a templated field Airflow's own "Rendered Template" view shows to the
  same users; secrets never belong there (docs/security.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import Mapping

from dood.proxy import allow_list as rules
from dood.proxy import wire
from dood.proxy.allow_list import _CONTAINER, Refused, Route, RouteKind, Target, _rule
from dood.proxy.server import ProxyServer

MAX_LOG_LINES = 1000
_LINES = re.compile(r"^[0-9]{1,9}$")

READ_ONLY: tuple[rules._Rule, ...] = (
    _rule("GET HEAD", "/_ping", RouteKind.RELAY, "ping"),
    _rule("GET", "/version", RouteKind.RELAY, "version"),
    _rule("GET", "/info", RouteKind.RELAY, "info"),
    _rule("GET", "/containers/json", RouteKind.LIST, "list", "all limit size filters trunc_cmd"),
    _rule("GET", f"/containers/{_CONTAINER}/json", RouteKind.CONTAINER, "json", "size"),
    _rule(
        "GET",
        f"/containers/{_CONTAINER}/logs",
        RouteKind.CONTAINER,
        "logs",
        "stdout stderr since until timestamps tail",
        false_only="follow",
    ),
    _rule("GET", f"/containers/{_CONTAINER}/stats", RouteKind.CONTAINER, "stats", "one-shot", false_only="stream"),
    _rule("GET", "/images/(?P<image>.+)/json", RouteKind.IMAGE, "image.inspect"),
)


def route(method: str, target: Target) -> Route:
    """The read-only call this is, or `Refused` (403): nothing that changes anything passes."""
    try:
        found = rules.route(method, target, allowed=READ_ONLY)
        if found.action == "stats" and "stream" not in target.query:  # the daemon streams unless told not to
            raise Refused(403, "stats must be asked with stream=false (one sample)")
        return found
    except Refused as exc:
        if exc.status != 403:
            raise
        raise Refused(
            403,
            f"{method} {target.path} is refused on the read-only listener (only ping, version, info, and list, "
            "inspect, one stats sample and a log tail of dood's containers): "
            f"{exc.reason}",
        ) from None


def bounded_tail(query: Mapping[str, str]) -> dict[str, str]:
    """The logs query with a `tail` of at most MAX_LOG_LINES (absent, `all`, negative or more: MAX_LOG_LINES)."""
    asked = query.get("tail", "")
    lines = int(asked) if _LINES.match(asked) else MAX_LOG_LINES
    return {**query, "tail": str(min(lines, MAX_LOG_LINES))}


def without_environment(body: bytes) -> bytes:
    """A container's or an image's inspect without `Config.Env` (nor an image's `ContainerConfig.Env`)."""
    try:
        inspected = json.loads(body)
    except ValueError:
        raise Refused(502, "the daemon's inspect is not JSON") from None
    if not isinstance(inspected, dict):
        raise Refused(502, "the daemon's inspect is not an object")
    for key in ("Config", "ContainerConfig"):
        section = inspected.get(key)
        if isinstance(section, dict):
            section.pop("Env", None)
    return json.dumps(inspected).encode()


class ReadOnlyProxyServer(ProxyServer):
    """A `ProxyServer` whose allow-list is `READ_ONLY`, whose log tails are bounded and whose inspects carry no
    environment."""

    def route(self, method: str, target: Target) -> Route:
        return route(method, target)

    async def _dispatch(
        self,
        route: Route,
        target: Target,
        request: wire.Request,
        body: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        if route.action == "json":
            return await self._inspect_container(route, target, writer)
        if route.action == "image.inspect":
            self._check_image(route.image or "")
            status, answer = await self.daemon.call("GET", target.uri())
            return await self._answer(status, answer, writer)
        if route.action == "logs":
            target = dataclasses.replace(target, query=bounded_tail(target.query))
        return await super()._dispatch(route, target, request, body, reader, writer)

    async def _inspect_container(self, route: Route, target: Target, writer: asyncio.StreamWriter) -> bool:
        owned = await self.ownership.resolve(route.container or "", target.prefix, read_only=True)
        status, answer = 200, owned.inspect
        if answer is None or target.query:  # known by id (not fetched now), or asked with size=1
            path = target.path.replace(f"/containers/{route.container}", f"/containers/{owned.container_id}", 1)
            status, answer = await self.daemon.call("GET", target.uri(path=path))
        return await self._answer(status, answer, writer)

    async def _answer(self, status: int, answer: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(wire.json_bytes_response(status, without_environment(answer) if status == 200 else answer))
        await writer.drain()
        return True
