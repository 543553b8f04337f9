"""Reaching the real Docker daemon (and listening for clients): endpoints, connections, small JSON calls.

Every proxied request gets its own upstream connection, sent with `Connection: close`: a response then
ends when the daemon closes, so streamed and chunked bodies are relayed byte for byte, never parsed.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from dood.proxy import wire

MAX_JSON_BYTES = 16 * 1024 * 1024  # an inspect of a container with a huge environment still fits


@dataclass(frozen=True)
class Endpoint:
    """`unix:///path/to.sock` or `tcp://host:port`."""

    scheme: str
    path: str = ""
    host: str = ""
    port: int = 0

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme == "unix" and parts.path.startswith("/") and not parts.netloc:
            return cls("unix", path=parts.path)
        if parts.scheme in ("tcp", "http") and parts.hostname and parts.port and parts.path in ("", "/"):
            return cls("tcp", host=parts.hostname, port=parts.port)
        raise ValueError(f"{url!r}: expected unix:///path/to.sock or tcp://host:port")

    def __str__(self) -> str:
        return f"unix://{self.path}" if self.scheme == "unix" else f"tcp://{self.host}:{self.port}"

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.scheme == "unix":
            return await asyncio.open_unix_connection(self.path, limit=wire.MAX_HEAD_BYTES)
        return await asyncio.open_connection(self.host, self.port, limit=wire.MAX_HEAD_BYTES)


class Daemon:
    """The upstream Docker daemon."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    async def open(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, *, upgrade: bool = False
    ) -> tuple[wire.Response, asyncio.StreamReader, asyncio.StreamWriter]:
        """Send one request on a new connection; returns the response head and the open streams."""
        try:
            reader, writer = await self.endpoint.connect()
        except OSError as exc:
            raise wire.HttpError(502, f"cannot reach the Docker daemon at {self.endpoint}: {exc}") from None
        sent = [(k, v) for k, v in headers if k.lower() not in wire.NOT_FORWARDED]
        sent.append(("Host", "docker"))
        if body or method in ("POST", "PUT"):
            sent.append(("Content-Length", str(len(body))))
        sent += [("Connection", "Upgrade"), ("Upgrade", "tcp")] if upgrade else [("Connection", "close")]
        try:
            writer.write(wire.encode_head(f"{method} {target} HTTP/1.1", sent) + body)
            await writer.drain()
            return await wire.read_response(reader), reader, writer
        except BaseException:
            writer.close()
            raise

    async def call(self, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
        """A small request answered in full: (status, body)."""
        headers = [("Content-Type", "application/json")] if body else []
        response, reader, writer = await self.open(method, target, headers, body)
        try:
            if not wire.response_has_body(method, response.status):
                return response.status, b""
            return response.status, await wire.read_body(reader, response.body_length(), MAX_JSON_BYTES)
        finally:
            writer.close()


def daemon_message(body: bytes) -> str:
    """The daemon's `{"message": ...}`, or the raw text."""
    try:
        payload: Any = json.loads(body)
        return str(payload.get("message", payload)) if isinstance(payload, dict) else str(payload)
    except ValueError:
        return body.decode("utf-8", "replace")[:500]
