"""dood-proxy's server: one task per client connection, each request checked, rewritten and relayed.

What is checked where: `rules` decides which calls exist at all, `dood.policy` what a created container
may ask for, `ownership` which containers may be touched. This module only wires them to the streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
import stat
from collections.abc import Callable, Iterable

from dood.config.gpu_inventory import GpuInventory
from dood.engine import security as engine_security
from dood.mounts.source_safety import read_write_directory_binds, unsafe_bind_sources
from dood.naming import DEFAULT_STACK, HOST_LABEL, MANAGED_LABEL, STACK_LABEL
from dood.policy import MalformedBody, Policy, apply_defaults, canonical_create_body, parse_json, violations
from dood.policy.model import parse_user
from dood.proxy import allow_list as rules
from dood.proxy import directory_api as directories
from dood.proxy import wire
from dood.proxy.allow_list import Refused, Route, RouteKind, Target
from dood.proxy.daemon import Daemon, Endpoint
from dood.proxy.gpus import GpuReferee
from dood.proxy.identity import IdentityGuard, image_group_problems
from dood.proxy.listener import Limits, Listener, bind_tcp, bind_unix
from dood.proxy.ownership import Owned, Ownership
from dood.proxy.relay import complete, linger, relay_response

log = logging.getLogger("dood.proxy")
DEFAULT_MAX_BODY = 1024 * 1024
_SMALL_BODY = 4096  # the most any other allowed call may carry (and it must be empty JSON)
_AUTH_BODY = 64 * 1024  # registry credentials, identity tokens
BODY_SECONDS = 60  # a request's body (at most --max-body-bytes) must arrive within this, not drip for minutes
IDLE_SECONDS = 300  # a client that sends no (complete) request for this long is disconnected
FIRST_REQUEST_SECONDS = 10  # ... and before its first request (after the TLS handshake): anyone can connect


class ProxyServer:
    """Stands between clients and the Docker socket; see docs/security.md for what passes and why."""

    def __init__(
        self,
        *,
        policy: Policy,
        upstream: Endpoint,
        max_body_bytes: int = DEFAULT_MAX_BODY,
        inspectable_labels: Iterable[str] = (),
        stack: str = DEFAULT_STACK,
        host: str | None = None,
        gpus: GpuInventory | None = None,
    ) -> None:
        self.policy = policy
        self.daemon = Daemon(upstream)
        self.remap = engine_security.EngineRemap(self.daemon)  # the engine's --userns-remap, read every 5 s
        self.gpus = GpuReferee(
            self.daemon, probe_images=policy.gpu_probe_images, max_gpus=policy.max_gpus, inventory=gpus
        )
        self.stack = stack
        self.host = host  # this Docker host's name when the deployment has several: label dood.host, forced
        self.ownership = Ownership(self.daemon, inspectable=inspectable_labels, stack=stack, host=host)
        socket_path = upstream.path if upstream.scheme == "unix" else None
        self.identity = IdentityGuard(policy, socket_path=socket_path, stack=stack, host=host)
        self.max_body_bytes = max_body_bytes

    def route(self, method: str, target: Target) -> Route:
        """Which allowed call this is (`readonly.ReadOnlyProxyServer` narrows the allow-list)."""
        return rules.route(method, target)

    async def listen(
        self,
        endpoint: Endpoint,
        *,
        socket_mode: int = 0o660,
        tls: ssl.SSLContext | None = None,
        limits: Limits | None = None,
    ) -> Listener:
        """Listen on a unix socket, or on TCP (with `tls`: mutual TLS, `dood.proxy.server_tls.server_context`), within
        `limits` (`dood.proxy.listener`: connections not yet past their first request are bounded)."""
        if endpoint.scheme == "unix":
            if tls is not None:
                raise ValueError(f"TLS is for TCP listeners, not {endpoint}")
            _clear_stale_socket(endpoint.path)
            os.makedirs(os.path.dirname(endpoint.path) or ".", exist_ok=True)
            sockets = [bind_unix(endpoint.path, socket_mode)]
        else:
            sockets = await bind_tcp(endpoint.host, endpoint.port)
        return Listener(sockets, self.handle, name=str(endpoint), tls=tls, limits=limits).start()

    # --- one client connection ---

    async def handle(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        on_first_request: Callable[[], None] | None = None,
    ) -> None:
        """Serve one connection's requests in turn (pipelined ones wait: the reader's buffer stays bounded).
        The first head must be complete within FIRST_REQUEST_SECONDS (then `on_first_request()`), each later
        one within IDLE_SECONDS of the previous answer."""
        stopping = False
        timeout = FIRST_REQUEST_SECONDS
        try:
            while True:
                try:
                    request = await asyncio.wait_for(wire.read_request(reader), timeout)
                except wire.HttpError as exc:
                    writer.write(wire.error_response(exc.status, f"dood-proxy: {exc.reason}", close=True))
                    await writer.drain()
                    return
                if request is None:
                    return
                if timeout != IDLE_SECONDS:  # the first request: no longer a pending connection
                    timeout = IDLE_SECONDS
                    if on_first_request is not None:
                        on_first_request()
                if not await self._serve(request, reader, writer) or not request.keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass  # gone, or silent for too long: just close
        except asyncio.CancelledError:
            # The proxy is stopping: end it as a closed connection (the listener's task ends quietly).
            stopping = True
        except Exception:  # one broken connection must not take the proxy down
            log.exception("dood-proxy: unexpected error on a client connection")
        finally:
            if stopping:  # no goodbye: a TLS close waits (Limits.tls_shutdown_seconds) for the client's close_notify
                writer.transport.abort()
            else:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    async def _serve(self, request: wire.Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection must close afterwards."""
        length = request.body_length()
        length = 0 if length == -1 else length  # a request without framing has no body
        body_read = length == 0
        try:
            target = rules.parse_target(request.target)
            route = self.route(request.method, target)
            limit = {RouteKind.CREATE: self.max_body_bytes, RouteKind.AUTH: _AUTH_BODY}.get(route.kind, _SMALL_BODY)
            takes_body = route.kind in (RouteKind.CREATE, RouteKind.AUTH) or route.action == "dood.directories"
            if (request.header("expect") or "").lower() == "100-continue":
                if length is not None and length > limit:
                    raise wire.HttpError(413, f"body of {length} bytes is larger than the {limit} bytes allowed")
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = await asyncio.wait_for(wire.read_body(reader, length, limit), BODY_SECONDS)
            body_read = True
            if not takes_body and body.strip() not in (b"", b"{}", b"null"):
                raise Refused(400, f"{request.method} {target.path} takes no request body")
            log.debug("allow %s %s", request.method, request.target)
            return await self._dispatch(route, target, request, body, reader, writer)
        except (Refused, wire.HttpError) as exc:
            status, message = (
                (exc.status, exc.message) if isinstance(exc, Refused) else (exc.status, f"dood-proxy: {exc.reason}")
            )
            level = logging.INFO if status == 404 else logging.WARNING
            log.log(level, "refuse %s %s -> %d %s", request.method, request.target[:200], status, message)
            close = not body_read  # the unread body would be taken for the next request
            writer.write(wire.error_response(status, message, close=close))
            await writer.drain()
            if close:
                await linger(reader)
            return not close

    async def _dispatch(
        self,
        route: Route,
        target: Target,
        request: wire.Request,
        body: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        if route.kind == RouteKind.RELAY:
            return await self._forward(request, target.uri(), b"", reader, writer)
        if route.kind == RouteKind.AUTH:
            sent = rules.login_body(body, self.policy.login_registries())
            return await self._forward(request, target.uri(), sent, reader, writer)
        if route.kind == RouteKind.IMAGE:
            self._check_image(route.image or "")
            return await self._forward(request, target.uri(), b"", reader, writer)
        if route.kind == RouteKind.PULL:
            self._check_image(rules.pull_reference(target.query))
            return await self._forward(request, target.uri(), b"", reader, writer)
        if route.kind == RouteKind.LIST and self.host is None:  # "no dood.host label" is no filter Docker has
            return await self._list_of_no_host(target, writer)
        if route.kind in (RouteKind.LIST, RouteKind.EVENTS):
            query = self._only_ours(target.query)
            return await self._forward(request, target.uri(query=query), b"", reader, writer)
        if route.kind == RouteKind.NETWORK:
            return await self._network(target, writer)
        if route.kind == RouteKind.CREATE:
            return await self._create(request, target, body, writer)
        if route.kind == RouteKind.DOOD:
            return await self._dood(route, body, writer)
        return await self._container(route, target, request, reader, writer)

    async def _dood(self, route: Route, body: bytes, writer: asyncio.StreamWriter) -> bool:
        """dood-proxy's own endpoints: who it is, and directories made for containers."""
        if route.action == "dood.info":
            answer = {**directories.info(), "stack": self.stack, "host": self.host}
        else:
            try:
                asked = parse_json(body or b"{}")
            except MalformedBody as exc:
                raise Refused(400, f"directories body: {exc}") from None
            remap = None  # on an engine with --userns-remap: the host ids of a container's ids
            if isinstance(asked, dict) and asked.get("user") is not None:
                try:
                    remap = await self.remap.get()
                except engine_security.RemapUnknown as exc:
                    raise Refused(503, str(exc)) from None
            host_gid = remap.host_gid if remap is not None else None
            try:
                answer = await asyncio.to_thread(
                    directories.make_directory, asked, self.policy, host_gid=host_gid, stack=self.stack
                )
            except directories.TooMany as busy:  # 429 with Retry-After, which a plain refusal does not carry
                log.warning("refuse POST /dood/v1/directories -> 429 %s", busy.message)
                writer.write(directories.too_many_response(busy))
                await writer.drain()
                return True
            # every value logged was checked: no control character reaches the log
            log.info("%s", directories.describe(answer))
        writer.write(wire.json_bytes_response(200, json.dumps(answer).encode()))
        await writer.drain()
        return True

    async def _list_of_no_host(self, target: Target, writer: asyncio.StreamWriter) -> bool:
        """A proxy without --host lists its stack's containers launched for no named host (those launched for
        one are another proxy's: it does not touch them, nor show them)."""
        status, answer = await self.daemon.call("GET", target.uri(query=self._only_ours(target.query)))
        if status == 200:
            try:
                listed = json.loads(answer)
                kept = [c for c in listed if HOST_LABEL not in (c.get("Labels") or {})]
                answer = json.dumps(kept).encode()
            except (ValueError, TypeError, AttributeError):
                raise Refused(502, "the daemon's container list is not readable") from None
        writer.write(wire.json_bytes_response(status, answer))
        await writer.drain()
        return True

    async def _network(self, target: Target, writer: asyncio.StreamWriter) -> bool:
        """Network inspect (or list): the daemon's answer, showing only dood's containers attached to it."""
        status, answer = await self.daemon.call("GET", target.uri())
        if status == 200:
            query = self._only_ours({"all": "1"})
            listed, containers = await self.daemon.call("GET", target.uri(path="/containers/json", query=query))
            try:
                managed = {container["Id"] for container in json.loads(containers)} if listed == 200 else set()
            except (ValueError, TypeError, KeyError):
                managed = set()  # then no container is shown: never a foreign one
            answer = rules.network_view(answer, managed)
        writer.write(wire.json_bytes_response(status, answer))
        await writer.drain()
        return True

    def _only_ours(self, query):
        """A list or events query narrowed to this stack's (and host's) containers (the daemon ANDs labels)."""
        query = rules.with_label_filter(
            rules.with_label_filter(query, f"{MANAGED_LABEL}=true"), f"{STACK_LABEL}={self.stack}"
        )
        return query if self.host is None else rules.with_label_filter(query, f"{HOST_LABEL}={self.host}")

    def _check_image(self, reference: str) -> None:
        if not self.policy.image_allowed(reference):
            raise Refused(
                403, f"image {reference!r} matches none of policy.allowed_images {list(self.policy.allowed_images)}"
            )

    async def _create(self, request: wire.Request, target: Target, body: bytes, writer: asyncio.StreamWriter) -> bool:
        try:
            parsed = parse_json(body or b"{}")
        except MalformedBody as exc:
            raise Refused(400, f"create body: {exc}") from None
        try:
            found = violations(parsed, self.policy)
        except RecursionError:  # nested below what the parser took, deeper than any Docker request
            raise Refused(400, "create body: nested too deeply to be a Docker request") from None
        if found:
            status = 400 if any(v.structural for v in found) else 403
            raise Refused(status, "the container breaks the dood policy: " + "; ".join(str(v) for v in found))
        canonical, _ = canonical_create_body(parsed)
        self.identity.check(canonical)  # never the proxy's uid or the socket's group, whatever the policy lists
        canonical["Labels"] = self.identity.labels(canonical.get("Labels"))  # every dood.* label is ours
        name = target.query.get("name")
        self.identity.check_name(name, canonical["Labels"])  # another stack's names are not free to take
        await self._check_bind_sources(canonical.get("HostConfig") or {}, "create", canonical.get("User"))
        apply_defaults(canonical, self.policy)  # the policy's process (and memory) limits where none is set
        # No setuid or file capability may lift a container above its (non-root) user: what keeps it from
        # changing the directories above its bind sources.
        canonical.setdefault("HostConfig", {})["SecurityOpt"] = ["no-new-privileges"]
        # no two containers share a GPU, whichever proxy or stack asks (proxy.gpus)
        async with self.gpus.checked(canonical, target.prefix, name=name):
            sent = json.dumps(canonical, separators=(",", ":")).encode()
            headers = [("Content-Type", "application/json")]
            response, up_reader, up_writer = await self.daemon.open("POST", target.uri(), headers, sent)
            try:
                answer = await wire.read_body(up_reader, response.body_length(), self.max_body_bytes)
            finally:
                up_writer.close()
        if response.status == 201:
            with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                self.ownership.remember(json.loads(answer)["Id"])
        elif response.status == 409:  # the daemon names the container holding the name: maybe another stack's
            message = f"dood-proxy: the container name {name!r} is already in use on this Docker host"
            writer.write(wire.error_response(409, message))
            await writer.drain()
            return True
        writer.write(complete(response, answer))
        await writer.drain()
        return True

    async def _container(
        self,
        route: Route,
        target: Target,
        request: wire.Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        read_only = route.action == "json"
        owned = await self.ownership.resolve(route.container or "", target.prefix, read_only=read_only)
        if read_only and owned.inspect is not None and not target.query:  # just fetched: answer with it
            writer.write(wire.json_bytes_response(200, owned.inspect))
            await writer.drain()
            return True
        gpus: contextlib.AbstractAsyncContextManager = contextlib.nullcontext()
        if route.action == "start":  # the daemon resolves bind sources now: check them again, now
            inspected = await self._inspect(owned, target.prefix)
            host_config = inspected.get("HostConfig") or {}
            await self._check_bind_sources(host_config, "start", (inspected.get("Config") or {}).get("User"))
            await self._check_group_names(owned, host_config.get("GroupAdd") or [], target.prefix)
            gpus = self.gpus.starting(inspected, target.prefix)  # an exited container's GPUs may be another's now
        path = target.path.replace(f"/containers/{route.container}", f"/containers/{owned.container_id}", 1)
        async with gpus:
            keep = await self._forward(request, target.uri(path=path), b"", reader, writer, upgrade=route.upgrade)
        if route.action == "remove":
            self.ownership.forget(owned.container_id)
        return keep

    async def _check_bind_sources(self, host_config: dict, when: str, user: object = None) -> None:
        """Refuse (403) a bind source whose directories someone untrusted could re-point, or a directory bound
        read-write that the container's identity may not write (dood.mounts.source_safety)."""
        owner = parse_user(user)
        groups = tuple(int(g) for g in host_config.get("GroupAdd") or [] if str(g).isdigit())
        identity = None
        if owner is not None and not self.policy.allow_root_user and read_write_directory_binds(host_config):
            identity = await self._host_identity(owner[0], (owner[1], *groups))
        problems = await asyncio.to_thread(
            unsafe_bind_sources, host_config, self.policy.allowed_host_roots, identity=identity
        )
        if problems:
            raise Refused(403, f"refusing to {when}: a bind source could be re-pointed: " + "; ".join(problems))

    async def _host_identity(self, uid: int, gids: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
        """The container's ids as the host sees them: the same, or mapped on an engine that remaps user
        namespaces (a file's owner on the host is compared with the host ids)."""
        try:
            remap = await self.remap.get()
        except engine_security.RemapUnknown as exc:
            raise Refused(503, str(exc)) from None
        if remap is None:
            return uid, gids
        host_uid = remap.host_uid(uid)
        if host_uid is None:
            raise Refused(403, f"uid {uid} is outside the engine's user-namespace ranges")
        return host_uid, tuple(g for g in map(remap.host_gid, gids) if g is not None)

    async def _check_group_names(self, owned: Owned, groups: list, prefix: str) -> None:
        """Refuse (403) to start a container whose image would resolve a `GroupAdd` number to another gid
        (by a group of that *name* in its /etc/group). The file cannot change before start: the container
        has not run, and nothing through the proxy writes into one (archive uploads are refused)."""
        if not groups:
            return
        status, archive = await self.daemon.call(
            "GET", f"{prefix}/containers/{owned.container_id}/archive?path=%2Fetc%2Fgroup"
        )
        if status == 404:
            return  # no /etc/group: every entry is taken as the number it is
        if status != 200:
            raise Refused(502, f"reading {owned.container_id[:12]}'s /etc/group before start failed ({status})")
        problems = image_group_problems(archive, [str(group) for group in groups])
        if problems:
            raise Refused(403, "refusing to start: " + "; ".join(problems))

    async def _inspect(self, owned: Owned, prefix: str) -> dict:
        """The container's inspect as the daemon holds it (binds and GPUs cannot change after create)."""
        body = owned.inspect
        if body is None:
            status, body = await self.daemon.call("GET", f"{prefix}/containers/{owned.container_id}/json")
            if status != 200:
                raise Refused(502, f"inspecting {owned.container_id[:12]} before start failed ({status})")
        try:
            inspected = json.loads(body)
        except ValueError:
            inspected = None
        if not isinstance(inspected, dict) or not isinstance(inspected.get("HostConfig") or {}, dict):
            raise Refused(502, "the daemon's inspect is not readable")
        return inspected

    # --- relaying ---

    async def _forward(
        self,
        request: wire.Request,
        uri: str,
        body: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        upgrade: bool = False,
    ) -> bool:
        """Send the request upstream and relay the answer as it comes; False when the client must close."""
        asked = upgrade and request.wants_upgrade
        response, up_reader, up_writer = await self.daemon.open(
            request.method, uri, request.headers, body, upgrade=asked
        )
        try:
            return await relay_response(request, response, reader, writer, up_reader, up_writer, upgrade=upgrade)
        finally:
            up_writer.close()


def _clear_stale_socket(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ValueError(f"{path} exists and is not a socket; refusing to replace it")
    os.unlink(path)
