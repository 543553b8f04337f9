"""`dood-proxy` / `python -m dood.proxy`: run the proxy until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import re
import signal
import socket
import ssl
import sys
from collections.abc import Sequence

from dood.config.model import load_config
from dood.engine.security import startup_line
from dood.naming import DEFAULT_STACK, HOST_LABEL, HOST_PATTERN, STACK_LABEL, STACK_PATTERN
from dood.policy import Policy
from dood.proxy import wire
from dood.proxy.daemon import Daemon, Endpoint
from dood.proxy.gpus import configured_inventory
from dood.proxy.listener import Limits
from dood.proxy.readonly import ReadOnlyProxyServer
from dood.proxy.server import DEFAULT_MAX_BODY, ProxyServer
from dood.proxy.server_tls import server_context

log = logging.getLogger("dood.proxy")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dood-proxy",
        description="Docker socket proxy: lets dood create, run and remove its own containers, and nothing else.",
    )
    parser.add_argument(
        "--listen",
        action="append",
        default=[],
        help="unix:///run/dood/docker.sock or tcp://127.0.0.1:2375, without TLS; repeatable. TCP on any other "
        "address than loopback needs --allow-plain-tcp",
    )
    parser.add_argument(
        "--allow-plain-tcp",
        action="store_true",
        help="let --listen use TCP without TLS on an address other than loopback (e.g. tcp://0.0.0.0:2375): "
        "anyone who reaches it, a step's container on a bridge included, is served. Only on a network that "
        "nothing else joins (the compose stack's internal docker-api network)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=Limits().max_connections,
        help="connections held at once per listener; beyond it, it stops accepting until one ends while all are "
        "past their first request; a pending one otherwise gives its place "
        "(default: %(default)s). Connections not yet past their first request are bounded apart "
        "(dood.proxy.listener)",
    )
    parser.add_argument(
        "--tls-listen",
        action="append",
        default=[],
        metavar="tcp://HOST:PORT",
        help="a TCP listener with mutual TLS (needs --tls-cert, --tls-key, --tls-ca-cert): for clients on other "
        "machines (docs/hosts.md); repeatable",
    )
    parser.add_argument("--tls-cert", help="the proxy's certificate (PEM), for --tls-listen")
    parser.add_argument("--tls-key", help="the proxy's private key (PEM), for --tls-listen")
    parser.add_argument("--tls-ca-cert", help="the CA whose certificates clients must present (PEM), for --tls-listen")
    parser.add_argument(
        "--host",
        default=os.environ.get("DOOD_HOST") or None,
        help="this Docker host's name when the deployment has several (`hosts:` in the config): forced as the "
        "label dood.host on every create, and the only host whose containers may be listed or touched "
        "(default: $DOOD_HOST; none: no host label)",
    )
    parser.add_argument(
        "--upstream", default="unix:///var/run/docker.sock", help="the real Docker socket (default: %(default)s)"
    )
    parser.add_argument(
        "--config",
        default=os.environ.get("DOOD_CONFIG"),
        help="dood config whose `policy:` section is enforced (default: $DOOD_CONFIG; none: the default policy)",
    )
    parser.add_argument(
        "--socket-mode", default="660", help="permissions of a unix listening socket, octal (default: %(default)s)"
    )
    parser.add_argument(
        "--max-body-bytes", type=int, default=DEFAULT_MAX_BODY, help="largest create body (default: %(default)s)"
    )
    parser.add_argument(
        "--inspectable-label",
        action="append",
        default=[],
        metavar="KEY[=VALUE]",
        help="containers carrying this label may be inspected (read-only), e.g. the Airflow containers, so "
        "that dood's mount discovery works behind the proxy; repeatable",
    )
    parser.add_argument(
        "--stack",
        default=os.environ.get("DOOD_STACK") or None,
        help="this deployment's name: forced as the label dood.stack on every create, and the only stack whose "
        "containers may be listed or touched (default: $DOOD_STACK, else the compose project of the proxy's "
        f"own container, else {DEFAULT_STACK!r})",
    )
    parser.add_argument(
        "--read-only",
        action="store_true",
        help="only list, inspect, one stats sample and log tails of dood's containers (for Airflow's "
        "api-server / UI); everything else 403 (dood.proxy.readonly)",
    )
    parser.add_argument("--log-level", default=os.environ.get("DOOD_PROXY_LOG_LEVEL", "INFO"))
    return parser


async def serve(
    proxy: ProxyServer,
    listen: Endpoint | Sequence[tuple[Endpoint, ssl.SSLContext | None]],
    socket_mode: int,
    limits: Limits | None = None,
) -> None:
    listeners = [(listen, None)] if isinstance(listen, Endpoint) else list(listen)
    servers = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        for endpoint, tls in listeners:
            servers.append(await proxy.listen(endpoint, socket_mode=socket_mode, tls=tls, limits=limits))
            how = " (mutual TLS: client certificates required)" if tls else ""
            log.info("dood-proxy listening on %s%s, forwarding to %s", endpoint, how, proxy.daemon.endpoint)
        await stop.wait()
    finally:
        for server in servers:
            server.close()
        for endpoint, _ in listeners:
            if endpoint.scheme == "unix":
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(endpoint.path)
    log.info("dood-proxy stopped")


async def compose_project(upstream: Endpoint) -> str | None:
    """The compose project of the container this proxy runs in (two stacks: two projects), if any."""
    try:
        status, body = await Daemon(upstream).call("GET", f"/containers/{socket.gethostname()}/json")
        labels = (json.loads(body).get("Config") or {}).get("Labels") or {} if status == 200 else {}
    except (OSError, ValueError, AttributeError, wire.HttpError):
        return None
    project = labels.get("com.docker.compose.project")
    return project.lower() if isinstance(project, str) and project else None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        listeners = _listeners(args)
        limits = Limits.of(args.max_connections)
        upstream = Endpoint.parse(args.upstream)
        socket_mode = int(args.socket_mode, 8)
        policy = load_config(args.config, section="policy") if args.config else Policy()
        gpus = configured_inventory(args.config, args.host)  # what DeviceIDs and tickets are checked against
    except ValueError as exc:
        print(f"dood-proxy: {exc}", file=sys.stderr)
        return 2
    if args.host is not None and not re.match(HOST_PATTERN, args.host):
        print(f"dood-proxy: --host {args.host!r} must match {HOST_PATTERN}", file=sys.stderr)
        return 2
    if not args.config:
        log.warning("No --config and no $DOOD_CONFIG: enforcing the default policy")
    for listen, tls in listeners:
        if _plain_tcp_beyond_loopback(listen, tls):  # only with --allow-plain-tcp (_listeners)
            log.warning(
                "PLAIN TCP WITHOUT TLS on %s (--allow-plain-tcp): anyone who reaches this address, a step's "
                "container on a bridge network included, may %s. Keep it on a network nothing else joins.",
                listen,
                "read dood's containers and their logs" if args.read_only else "create containers within the policy",
            )
    stack = args.stack or asyncio.run(compose_project(upstream)) or DEFAULT_STACK
    if not re.match(STACK_PATTERN, stack):
        print(f"dood-proxy: --stack {stack!r} must match {STACK_PATTERN}", file=sys.stderr)
        return 2
    log.info("Stack: %s (label %s on every container it creates; the only stack it touches)", stack, STACK_LABEL)
    if args.host:
        log.info("Host: %s (label %s on every container it creates; the only host it touches)", args.host, HOST_LABEL)
    log.info("Policy: %s", policy.model_dump_json())
    log.info("%s", asyncio.run(startup_line(Daemon(upstream))))  # user namespaces: remapped or not
    server_class = ReadOnlyProxyServer if args.read_only else ProxyServer
    proxy = server_class(
        policy=policy,
        upstream=upstream,
        max_body_bytes=args.max_body_bytes,
        inspectable_labels=args.inspectable_label,
        stack=stack,
        host=args.host,
        gpus=gpus,
    )
    unsafe = proxy.identity.problems()
    if unsafe:  # an identity that owns the bind sources' directories, or opens the socket: never a step's
        print("dood-proxy: refusing to start:\n" + "\n".join(f"  - {p}" for p in unsafe), file=sys.stderr)
        print("  List step identities in policy.allowed_users that are neither (docs/security.md).", file=sys.stderr)
        return 2
    asyncio.run(serve(proxy, listeners, socket_mode, limits))
    return 0


def _listeners(args: argparse.Namespace) -> list[tuple[Endpoint, ssl.SSLContext | None]]:
    """The plain listeners, then the mutual-TLS ones; ValueError saying what is missing."""
    if not (args.listen or args.tls_listen):
        raise ValueError("give at least one --listen or --tls-listen")
    listeners: list[tuple[Endpoint, ssl.SSLContext | None]] = [(Endpoint.parse(url), None) for url in args.listen]
    for endpoint, _ in listeners:
        if _plain_tcp_beyond_loopback(endpoint, None) and not args.allow_plain_tcp:
            raise ValueError(
                f"--listen {endpoint} is TCP without TLS on an address other than loopback: anyone who reaches it "
                "(a step's container on a bridge network included) could "
                + ("read dood's containers and their logs" if args.read_only else "launch containers")
                + ". Listen on a unix "
                "socket, on tcp://127.0.0.1:PORT, or with mutual TLS (--tls-listen); or, on a network nothing "
                "else joins (the compose stack's internal docker-api network), add --allow-plain-tcp"
            )
    tls_files = {"--tls-cert": args.tls_cert, "--tls-key": args.tls_key, "--tls-ca-cert": args.tls_ca_cert}
    if not args.tls_listen:
        if any(tls_files.values()):
            raise ValueError("--tls-cert, --tls-key and --tls-ca-cert are for --tls-listen, and none is given")
        return listeners
    missing = [flag for flag, value in tls_files.items() if not value]
    if missing:
        raise ValueError(f"--tls-listen needs {', '.join(missing)} (mutual TLS only: scripts/make-host-certs.sh)")
    context = server_context(cert=args.tls_cert, key=args.tls_key, client_ca=args.tls_ca_cert)
    for url in args.tls_listen:
        endpoint = Endpoint.parse(url)
        if endpoint.scheme != "tcp":
            raise ValueError(f"--tls-listen {url!r}: TLS listens on tcp://HOST:PORT")
        listeners.append((endpoint, context))
    return listeners


def _plain_tcp_beyond_loopback(endpoint: Endpoint, tls: ssl.SSLContext | None) -> bool:
    """TCP without TLS on anything but a loopback address (a name other than localhost may resolve anywhere)."""
    if endpoint.scheme != "tcp" or tls is not None or endpoint.host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(endpoint.host).is_loopback
    except ValueError:
        return True


if __name__ == "__main__":
    sys.exit(main())
