"""dood-proxy's read-only mode (`dood-proxy --read-only`): for Airflow's api-server, whose UI shows dood's
containers but must never create, start, stop or remove anything.

Only the calls in `READ_ONLY` pass — ping, version, info, the list of dood's containers, and inspect, one
stats sample and a bounded log tail of one of them (never followed, never streamed) — plus inspecting the
image a container runs (the policy's `allowed_images` still applies). Everything else is refused (403)
before the daemon is asked. Ownership is unchanged: a container without `dood.managed=true` is refused by
`ownership` exactly as on the normal listener, and the list is filtered to dood's containers.
"""

from __future__ import annotations

from dood.proxy import rules
from dood.proxy.rules import _CONTAINER, Refused, Route, Target, _rule
from dood.proxy.server import ProxyServer

READ_ONLY: tuple[rules._Rule, ...] = (
    _rule("GET HEAD", "/_ping", "pass", "ping"),
    _rule("GET", "/version", "pass", "version"),
    _rule("GET", "/info", "pass", "info"),
    _rule("GET", "/containers/json", "list", "list", "all limit size filters trunc_cmd"),
    _rule("GET", f"/containers/{_CONTAINER}/json", "container", "json", "size"),
    _rule(
        "GET",
        f"/containers/{_CONTAINER}/logs",
        "container",
        "logs",
        "stdout stderr since until timestamps tail",
        false_only="follow",
    ),
    _rule("GET", f"/containers/{_CONTAINER}/stats", "container", "stats", "one-shot", false_only="stream"),
    _rule("GET", "/images/(?P<image>.+)/json", "image", "image.inspect"),
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


class ReadOnlyProxyServer(ProxyServer):
    """A `ProxyServer` whose allow-list is `READ_ONLY`."""

    def route(self, method: str, target: Target) -> Route:
        return route(method, target)
