"""Which Docker API calls dood-proxy lets through, and how it rewrites them: pure functions, no I/O.

Default deny: a call is allowed only when its method and path match an entry of `ALLOWED` and every
query parameter is one that entry names. The request target is decoded once, checked, and re-encoded
canonically, so the daemon routes exactly the path and parameters that were checked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import quote, unquote, urlencode

from dood.policy.body import MalformedBody, parse_json

MIN_API_VERSION = (1, 24)  # older versions let `start` carry a HostConfig of its own
_VERSION = re.compile(r"^/v(\d{1,3})\.(\d{1,3})(/.*)$")
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_CONTAINER = r"(?P<container>[A-Za-z0-9][A-Za-z0-9_.-]*)"
_IMAGE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")


class Refused(Exception):
    """The call is not allowed (403), malformed (400), or the daemon's own answer (`verbatim`)."""

    def __init__(self, status: int, reason: str, *, verbatim: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.verbatim = verbatim

    @property
    def message(self) -> str:
        return self.reason if self.verbatim else f"dood-proxy: {self.reason}"


@dataclass(frozen=True)
class Target:
    """A request target, decoded: API version prefix, path without it, single-valued query."""

    version: str | None
    path: str
    query: Mapping[str, str] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        return f"/v{self.version}" if self.version else ""

    def uri(self, path: str | None = None, query: Mapping[str, str] | None = None) -> str:
        """The canonical target to send upstream (same version prefix)."""
        encoded = quote(path if path is not None else self.path, safe="/:@")
        params = self.query if query is None else query
        return self.prefix + encoded + (f"?{urlencode(params)}" if params else "")


class RouteKind(StrEnum):
    """How the server handles an allowed call (`server.ProxyServer`): one branch per kind."""

    RELAY = "relay"  # relayed as it is (ping, version, info)
    AUTH = "auth"  # registry login: only to registries the policy names
    IMAGE = "image"  # inspect an allowed image
    PULL = "pull"  # pull an allowed image
    CREATE = "create"  # the body checked by the policy, then rewritten
    LIST = "list"  # filtered to this stack's containers
    EVENTS = "events"  # filtered to this stack's containers
    NETWORK = "network"  # read-only
    CONTAINER = "container"  # one container, only one of ours
    DOOD = "dood"  # dood-proxy itself: no daemon call


@dataclass(frozen=True)
class Route:
    """What an allowed call is, for the server: `kind` says how to handle it."""

    kind: RouteKind
    action: str
    container: str | None = None
    image: str | None = None

    @property
    def upgrade(self) -> bool:
        return self.action == "attach"


@dataclass(frozen=True)
class _Rule:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    kind: RouteKind
    action: str
    params: frozenset[str] = frozenset()
    false_only: frozenset[str] = frozenset()  # accepted only when the daemon reads them as false


def _rule(methods: str, pattern: str, kind: RouteKind, action: str, params: str = "", false_only: str = "") -> _Rule:
    return _Rule(
        frozenset(methods.split()),
        re.compile(f"^{pattern}$"),
        kind,
        action,
        frozenset(params.split()) | frozenset(false_only.split()),
        frozenset(false_only.split()),
    )


_FALSE = frozenset({"", "0", "no", "false", "none"})  # the daemon's httputils.BoolValue reads these as false


ALLOWED: tuple[_Rule, ...] = (
    _rule("GET HEAD", "/_ping", RouteKind.RELAY, "ping"),
    _rule("GET", "/version", RouteKind.RELAY, "version"),
    _rule("GET", "/info", RouteKind.RELAY, "info"),
    _rule("GET", "/dood/v1/info", RouteKind.DOOD, "dood.info"),  # dood-proxy itself: no daemon call
    _rule("POST", "/dood/v1/directories", RouteKind.DOOD, "dood.directories"),
    _rule(
        "POST", "/auth", RouteKind.AUTH, "auth"
    ),  # registry login (docker.conn_id): only to registries the policy names
    _rule("GET", "/images/(?P<image>.+)/json", RouteKind.IMAGE, "image.inspect"),
    _rule("POST", "/images/create", RouteKind.PULL, "image.pull", "fromImage tag platform"),
    _rule("POST", "/containers/create", RouteKind.CREATE, "create", "name platform"),
    _rule("GET", "/containers/json", RouteKind.LIST, "list", "all limit size filters before since trunc_cmd"),
    _rule("GET", "/events", RouteKind.EVENTS, "events", "since until filters stream"),
    _rule("GET", "/networks", RouteKind.NETWORK, "network.list", "filters"),  # before API 1.28 it lists containers
    _rule(
        "GET",
        "/networks/(?P<network>[A-Za-z0-9][A-Za-z0-9_.-]*)",
        RouteKind.NETWORK,
        "network.inspect",
        "verbose scope",
    ),
    _rule("POST", f"/containers/{_CONTAINER}/start", RouteKind.CONTAINER, "start", "detachKeys"),
    _rule("POST", f"/containers/{_CONTAINER}/stop", RouteKind.CONTAINER, "stop", "t signal"),
    _rule("POST", f"/containers/{_CONTAINER}/kill", RouteKind.CONTAINER, "kill", "signal"),
    _rule("POST", f"/containers/{_CONTAINER}/wait", RouteKind.CONTAINER, "wait", "condition"),
    _rule(
        "GET",
        f"/containers/{_CONTAINER}/logs",
        RouteKind.CONTAINER,
        "logs",
        "follow stdout stderr since until timestamps tail details",
    ),
    _rule(
        "POST",
        f"/containers/{_CONTAINER}/attach",
        RouteKind.CONTAINER,
        "attach",
        "detachKeys logs stream stdin stdout stderr",
    ),
    _rule("GET", f"/containers/{_CONTAINER}/json", RouteKind.CONTAINER, "json", "size"),
    _rule("DELETE", f"/containers/{_CONTAINER}", RouteKind.CONTAINER, "remove", "v force", false_only="link"),
)

# Why the usual suspects are refused, so the caller reads a reason rather than a bare 403.
_REASONS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), reason)
    for pattern, reason in (
        (r"^/containers/[^/]+/exec$|^/exec/", "exec runs commands inside containers; dood never needs it"),
        (r"^/build|^/session|^/grpc", "building images on the host is not allowed"),
        (r"^/(swarm|services|nodes|tasks|secrets|configs)\b", "swarm endpoints are not allowed"),
        (r"^/plugins\b", "plugins run with host privileges; not allowed"),
        (r"^/volumes\b", "volumes are managed outside dood (driver options can bind host paths)"),
        (r"^/commit\b", "committing containers to images is not allowed"),
        (r"^/containers/[^/]+/archive$", "copying files into or out of containers is not allowed"),
        (
            r"^/containers/[^/]+/(update|rename|pause|unpause|restart|resize|export|changes|top|stats)$",
            "this container operation is not needed by dood and is not allowed",
        ),
        (r"^/images/", "only inspecting and pulling allowed images is allowed"),
        (r"^/networks/", "networks are read-only through dood-proxy"),
        (r"^/(system|distribution)\b", "this endpoint is not needed by dood and is not allowed"),
    )
)


def parse_target(raw: str) -> Target:
    """Decode and check a request target; anything ambiguous is refused (400)."""
    path, question, query_text = raw.partition("?")
    if "#" in raw or "\\" in raw:
        raise Refused(400, "fragments and backslashes are not accepted in the request target")
    if _PERCENT.search(path) or _PERCENT.search(query_text):
        raise Refused(400, "malformed percent-encoding in the request target")
    try:
        decoded = unquote(path, errors="strict")
    except UnicodeDecodeError:
        raise Refused(400, "the request path is not valid UTF-8") from None
    if "%" in decoded or any(ord(c) < 0x21 or ord(c) == 0x7F for c in decoded):
        raise Refused(400, "encoded '%' or control characters in the request path")
    segments = decoded.split("/")[1:]
    if not decoded.startswith("/") or any(s in ("", ".", "..") for s in segments):
        raise Refused(400, f"the path {decoded!r} is not in canonical form (empty, '.' or '..' segments)")
    version = None
    match = _VERSION.match(decoded)
    if match:
        major, minor = int(match.group(1)), int(match.group(2))
        if (major, minor) < MIN_API_VERSION:
            raise Refused(
                400, f"API version {major}.{minor} is older than the {MIN_API_VERSION[0]}.{MIN_API_VERSION[1]} required"
            )
        version, decoded = f"{major}.{minor}", match.group(3)
    return Target(version=version, path=decoded, query=_query(query_text))


def _query(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    if not text:
        return params
    for pair in text.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        try:
            name = unquote(name.replace("+", " "), errors="strict")
            value = unquote(value.replace("+", " "), errors="strict")
        except UnicodeDecodeError:
            raise Refused(400, "the query string is not valid UTF-8") from None
        if ";" in name or name in params:
            raise Refused(400, f"query parameter {name!r} is given more than once or is malformed")
        params[name] = value
    return params


def route(method: str, target: Target, allowed: tuple[_Rule, ...] = ALLOWED) -> Route:
    """The allowed call this is, or `Refused` (403) saying why not (`allowed`: `readonly.READ_ONLY` narrows it)."""
    for rule in allowed:
        match = rule.pattern.match(target.path)
        if match and method in rule.methods:
            unexpected = sorted(set(target.query) - rule.params)
            if unexpected:
                raise Refused(403, f"query parameter(s) {unexpected} are not allowed on {method} {target.path}")
            for name in rule.false_only & set(target.query):
                if target.query[name].strip().lower() not in _FALSE:
                    raise Refused(403, f"{name}={target.query[name]} is not allowed on {method} {target.path}")
            groups = match.groupdict()
            image = groups.get("image")
            if image is not None and not _IMAGE_REF.match(image):
                raise Refused(400, f"{image!r} is not an image reference")
            return Route(kind=rule.kind, action=rule.action, container=groups.get("container"), image=image)
    for pattern, reason in _REASONS:
        if pattern.search(target.path):
            raise Refused(403, f"{method} {target.path}: {reason}")
    raise Refused(403, f"{method} {target.path} is not on dood-proxy's allow-list")


def pull_reference(query: Mapping[str, str]) -> str:
    """The reference a `POST /images/create` would pull; no tag means every tag (`repo:*`)."""
    image = query.get("fromImage", "")
    tag = query.get("tag", "")
    if not image or not _IMAGE_REF.match(image):
        raise Refused(403, "only pulls by fromImage are allowed (no imports)")
    if tag:
        return f"{image}{'@' if ':' in tag else ':'}{tag}"
    last = image.rsplit("/", 1)[-1]
    return image if ("@" in image or ":" in last) else f"{image}:*"


def with_label_filter(query: Mapping[str, str], label: str) -> dict[str, str]:
    """The query with `label` added to its `filters` (labels are ANDed: only containers carrying it)."""
    raw = query.get("filters") or "{}"
    try:
        filters = parse_json(raw)
    except MalformedBody as exc:
        raise Refused(400, f"filters: {exc}") from None
    if not isinstance(filters, dict):
        raise Refused(400, "filters must be a JSON object")
    canonical: dict[str, dict[str, bool]] = {}
    for name, values in filters.items():
        as_list = isinstance(values, list) and all(isinstance(v, str) for v in values)
        as_map = isinstance(values, dict) and all(isinstance(v, bool) for v in values.values())
        if as_list or as_map:
            canonical[name] = dict.fromkeys(values, True)  # a map's `false` still filters in the daemon
        else:
            raise Refused(400, f"filters[{name!r}] must be a list of strings or a map of booleans")
    canonical.setdefault("label", {})[label] = True
    return {**query, "filters": json.dumps(canonical, separators=(",", ":"))}


# --- registry login: the daemon sends the caller's credentials to the address in the body ---

#: The fields of the daemon's AuthConfig, spelled as its JSON tags (Go matches them case-insensitively).
_AUTH_FIELDS = ("username", "password", "auth", "email", "serveraddress", "identitytoken", "registrytoken")
#: Docker Hub's names: an empty `serveraddress` logs in there; allowed when a pattern names one of them.
_HUB = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_LOGIN_ADDRESS = re.compile(r"^(?:https?://)?(?P<host>[A-Za-z0-9.:\[\]-]+)(?:/[\x21-\x7e]*)?$")


def login_body(body: bytes, registries: frozenset[str]) -> bytes:
    """The `POST /auth` body to send (canonical keys), when it names a registry in `registries`; else `Refused`.

    The daemon logs in by sending the credentials to `serveraddress`, whatever it is: without this check a
    client makes the daemon probe any host and port (its error tells what answered) with its credentials.
    """
    try:
        parsed = parse_json(body or b"{}")
    except MalformedBody as exc:
        raise Refused(400, f"auth body: {exc}") from None
    if not isinstance(parsed, dict):
        raise Refused(400, "the auth body must be a JSON object")
    canonical: dict[str, object] = {}
    for key, value in parsed.items():
        name = key.lower() if key.isascii() else ""  # Go folds some non-ASCII letters onto ASCII ones
        if name not in _AUTH_FIELDS:
            raise Refused(400, f"auth body: {key!r} is not a registry login field")
        if name in canonical:
            raise Refused(400, f"auth body: {name!r} is given twice (the daemon matches field names in any case)")
        canonical[name] = value
    address = canonical.get("serveraddress") or ""
    match = _LOGIN_ADDRESS.match(address) if isinstance(address, str) else None
    host = "index.docker.io" if address == "" else (match.group("host").lower() if match else None)
    allowed = registries | (_HUB if registries & _HUB else frozenset())
    if host not in allowed:
        raise Refused(
            403,
            f"registry login to {address!r} is not allowed: only to registries policy.allowed_images names "
            f"without a wildcard ({sorted(registries) or 'none'})",
        )
    return json.dumps(canonical, separators=(",", ":")).encode()


# --- networks: the daemon lists every container attached, and swarm's services and peers ---


def network_view(body: bytes, managed: Collection[str]) -> bytes:
    """A network inspect (or list) answer with only dood's containers in `Containers`, no `Services`/`Peers`."""
    try:
        payload = json.loads(body)
    except ValueError:
        raise Refused(502, "the daemon's network answer is not JSON") from None
    networks = payload if isinstance(payload, list) else [payload]
    for network in networks:
        if not isinstance(network, dict):
            raise Refused(502, "the daemon's network answer is not a network")
        for key in ("Services", "Peers"):
            network.pop(key, None)
        containers = network.get("Containers")
        if containers is not None:
            kept = containers.items() if isinstance(containers, dict) else ()
            network["Containers"] = {cid: info for cid, info in kept if cid in managed}
    return json.dumps(payload).encode()
