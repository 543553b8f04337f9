"""dood-proxy's relaying of a daemon's answer to the client: whole, streamed, or hijacked (attach).

Nothing here decides anything: the request was checked before it went upstream (`dood.proxy.server`).
Headers that only concern one hop are dropped (`wire.NOT_FORWARDED`); a body read whole is re-framed.
"""

from __future__ import annotations

import asyncio
import contextlib

from dood.proxy import wire


async def relay_response(
    request: wire.Request,
    response: wire.Response,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
    *,
    upgrade: bool,
) -> bool:
    """Relay the daemon's answer as it comes; False when the client connection must close after it."""
    hijacked = response.status == 101 or (response.status == 200 and response.body_length() == -1)
    if upgrade and hijacked:  # attach: raw bytes both ways from here on
        headers = response.headers if response.status == 101 else end_to_end(response.headers)
        writer.write(wire.encode_head(response.start, headers))
        await writer.drain()
        await tunnel(reader, writer, up_reader, up_writer)
        return False
    if not wire.response_has_body(request.method, response.status):
        writer.write(wire.encode_head(response.start, end_to_end(response.headers)))
        await writer.drain()
        return True
    length = response.body_length()
    if length is not None and length >= 0:
        writer.write(wire.encode_head(response.start, end_to_end(response.headers, length=length)))
        await wire.pipe(up_reader, writer, length)
        return True
    # Chunked or until-close: relayed verbatim (chunk framing included) until the daemon closes.
    headers = end_to_end(response.headers, keep_chunked=True) + [("Connection", "close")]
    writer.write(wire.encode_head(response.start, headers))
    await relay_until_close(reader, writer, up_reader)
    return False


def end_to_end(
    headers: list[tuple[str, str]], *, length: int | None = None, keep_chunked: bool = False
) -> list[tuple[str, str]]:
    kept = [
        (k, v)
        for k, v in headers
        if k.lower() not in wire.NOT_FORWARDED or (keep_chunked and k.lower() == "transfer-encoding")
    ]
    if length is not None:
        kept.append(("Content-Length", str(length)))
    return kept


def complete(response: wire.Response, body: bytes) -> bytes:
    """A response re-framed with a Content-Length (for bodies the proxy has read whole)."""
    return wire.encode_head(response.start, end_to_end(response.headers, length=len(body))) + body


async def relay_until_close(
    client_reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up_reader: asyncio.StreamReader
) -> None:
    """Relay a streamed body; stop as soon as the client goes away (as the daemon itself would)."""
    pump = asyncio.ensure_future(wire.pipe(up_reader, writer))
    gone = asyncio.ensure_future(client_closed(client_reader))
    try:
        await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pump, gone):
            task.cancel()
        for task in (pump, gone):
            with contextlib.suppress(BaseException):
                await task


async def linger(reader: asyncio.StreamReader, seconds: float = 2.0, most: int = 64 * 1024 * 1024) -> None:
    """Read and drop what the client still sends (a refused body), so it gets to read our answer."""

    async def drain() -> None:
        remaining = most
        while remaining > 0 and (data := await reader.read(wire.CHUNK)):
            remaining -= len(data)

    with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
        await asyncio.wait_for(drain(), seconds)


async def client_closed(reader: asyncio.StreamReader) -> None:
    while await reader.read(wire.CHUNK):
        pass  # a pipelined request during a stream is dropped: the connection closes after it


async def tunnel(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    """A hijacked connection (attach): bytes both ways until the daemon's side ends."""

    async def upstream() -> None:
        with contextlib.suppress(ConnectionError):
            await wire.pipe(client_reader, up_writer)
            if up_writer.can_write_eof():
                up_writer.write_eof()  # stdin closed: tell the daemon, keep reading its output

    sending = asyncio.ensure_future(upstream())
    try:
        with contextlib.suppress(ConnectionError):
            await wire.pipe(up_reader, client_writer)
    finally:
        sending.cancel()
        with contextlib.suppress(BaseException):
            await sending
