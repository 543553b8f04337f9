"""An aiodocker session for the triggers, built from the `DockerTarget` a trigger serializes (URL, API version,
TLS files).

One place for the URL rewrite (tcp:// -> http(s)://), the API version form aiodocker wants and the TLS
context, so every trigger reaches an endpoint the way the sync hook does.
"""

from __future__ import annotations

import functools
import os
import re
import ssl
from typing import TYPE_CHECKING

import aiodocker
import aiohttp

if TYPE_CHECKING:
    from dood.engine.target import DockerTarget

CALL_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=10)
CONNECTIONS_AT_A_TIME = 20  # per session over TCP: a burst of waits queues its inspects, not its TLS handshakes


def ssl_context(ca_cert: str | None, client_cert: str | None, client_key: str | None) -> ssl.SSLContext | None:
    """The TLS context for these files; None for a plain (unix or http) endpoint. One per files and their
    modification times, shared by every session of the process: a triggerer carrying 1,000 waits on a host
    holds one certificate store, not 1,000 (~0.2 MB each), and a certificate renewed on disk is read again."""
    files = tls_files(ca_cert, client_cert, client_key)
    return None if files is None else _ssl_context(files)


def tls_files(
    ca_cert: str | None, client_cert: str | None, client_key: str | None
) -> tuple[tuple[str | None, int], ...] | None:
    """The TLS files with their modification times, None for a plain endpoint: it changes when a certificate is
    renewed on disk (OSError when a file is missing, as for a moment while it is replaced)."""
    if not (ca_cert or client_cert):
        return None
    return tuple(
        (path, os.stat(path).st_mtime_ns) if path else (None, 0) for path in (ca_cert, client_cert, client_key)
    )


@functools.lru_cache(maxsize=32)
def _ssl_context(files: tuple[tuple[str | None, int], ...]) -> ssl.SSLContext:
    (ca_cert, _), (client_cert, _), (client_key, _) = files
    context = ssl.create_default_context(cafile=ca_cert)
    if client_cert:
        context.load_cert_chain(client_cert, client_key)
    return context


def async_docker(target: DockerTarget) -> aiodocker.Docker:
    """A new session to `target`: create it inside the event loop that uses it, and close it there.

    Over TCP a request's connection is closed once it is answered (`force_close`), not kept for the next: a
    trigger makes one short request (an inspect) beside its one long event stream, and over TLS every idle
    kept connection would hold asyncio's 256 KiB read buffer for as long as the trigger waits. At most
    CONNECTIONS_AT_A_TIME are open at once: the waits of a triggerer share one session per endpoint."""
    context = ssl_context(target.tls_ca_cert, target.tls_client_cert, target.tls_client_key)
    url = re.sub(r"^tcp://", "https://" if context else "http://", target.url)
    version = target.api_version if target.api_version == "auto" else "v" + target.api_version.lstrip("v")
    if not url.startswith(("http://", "https://")):
        return aiodocker.Docker(url=url, ssl_context=context, api_version=version, timeout=CALL_TIMEOUT)
    connector = aiohttp.TCPConnector(ssl=context if context else False, force_close=True, limit=CONNECTIONS_AT_A_TIME)
    return _ClosingItsConnector(url=url, connector=connector, api_version=version, timeout=CALL_TIMEOUT)


class _ClosingItsConnector(aiodocker.Docker):
    """aiodocker leaves a connector it was given open on close(); this session's connector is its own."""

    async def close(self) -> None:
        await super().close()
        await self.connector.close()
