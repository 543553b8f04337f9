"""HTTP/1.1 on asyncio streams, strictly: just what a reverse proxy in front of the Docker socket needs.

Requests are parsed strictly (one request line, token header names, no folded lines, never both
Content-Length and Transfer-Encoding) so that the proxy and the daemon cannot disagree on where a
request ends. Response bodies are never re-encoded: they are relayed as they come, so streamed logs and
events keep flowing and cost no parsing.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass

MAX_HEAD_BYTES = 64 * 1024
CHUNK = 64 * 1024
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_METHOD = re.compile(r"^[A-Z]+$")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TARGET = re.compile(r"^/[\x21-\x7e]*$")
_STATUS = re.compile(rb"^HTTP/1\.[01] (\d{3})(?: (.*))?$")
_HEX = re.compile(rb"[0-9A-Fa-f]+")
#: The methods the Docker Engine API uses: an allow-list (501 for any other token).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE"})
#: Headers a request may carry at most once (Host exactly once on HTTP/1.1: RFC 9112 3.2).
SINGLETONS = ("host", "content-length", "content-type")
#: The hixie-76 WebSocket handshake: 8 bytes of body follow with no framing header. Never accepted.
UNFRAMED_BODY_HEADERS = ("sec-websocket-key1", "sec-websocket-key2")
# Hop-by-hop headers, and the framing ones the proxy sets itself: never copied from one side to the other.
NOT_FORWARDED = frozenset(
    {
        *("connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization"),
        *("te", "trailer", "transfer-encoding", "upgrade", "content-length", "host", "expect"),
    }
)
REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Payload Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class HttpError(Exception):
    """The peer broke HTTP/1.1; answer with `status` and close the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Message:
    """A request or response head; header names keep their case, lookups ignore it."""

    start: str
    headers: list[tuple[str, str]]

    def values(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.headers if key.lower() == name]

    def header(self, name: str) -> str | None:
        found = self.values(name)
        return found[0] if found else None

    def tokens(self, name: str) -> set[str]:
        return {t.strip().lower() for value in self.values(name) for t in value.split(",") if t.strip()}

    def body_length(self) -> int | None:
        """Content-Length, None when chunked; -1 when neither (a response read until close)."""
        chunked = self.values("transfer-encoding")
        lengths = self.values("content-length")
        if chunked and lengths:
            raise HttpError(400, "both Transfer-Encoding and Content-Length")
        if chunked:
            if [v.strip().lower() for v in chunked] != ["chunked"]:
                raise HttpError(501, "only Transfer-Encoding: chunked is supported")
            return None
        if not lengths:
            return -1
        if len(lengths) != 1 or not lengths[0].isdigit() or len(lengths[0]) > 15:
            raise HttpError(400, "invalid Content-Length")
        return int(lengths[0])


@dataclass
class Request(Message):
    method: str = ""
    target: str = ""
    version: str = "HTTP/1.1"

    @property
    def keep_alive(self) -> bool:
        connection = self.tokens("connection")
        return "close" not in connection and (self.version == "HTTP/1.1" or "keep-alive" in connection)

    @property
    def wants_upgrade(self) -> bool:
        return "upgrade" in self.tokens("connection") and bool(self.header("upgrade"))


@dataclass
class Response(Message):
    status: int = 0


def _headers(lines: list[bytes]) -> list[tuple[str, str]]:
    headers = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            raise HttpError(400, "folded header lines are not accepted")
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.match(name):
            raise HttpError(400, f"malformed header line {line[:40]!r}")
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value):
            raise HttpError(400, f"control character in header {name.decode('latin-1')}")
        headers.append((name.decode("latin-1"), value.decode("latin-1")))
    return headers


async def _line(reader: asyncio.StreamReader) -> bytes:
    """One line without its CRLF. Read up to any LF, so that a bare LF is refused at once, not waited past."""
    line = await reader.readuntil(b"\n")
    if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
        raise HttpError(400, "bare CR or LF in the head or chunk framing")
    return line[:-2]


async def _read_head(reader: asyncio.StreamReader, what: str) -> list[bytes] | None:
    lines: list[bytes] = []
    size = 0
    while True:
        try:
            line = await _line(reader)
        except asyncio.IncompleteReadError as exc:
            if not exc.partial and not lines:
                return None
            raise HttpError(400, f"incomplete {what} head") from None
        except asyncio.LimitOverrunError:
            raise HttpError(431, f"{what} head larger than {MAX_HEAD_BYTES} bytes") from None
        size += len(line) + 2
        if size > MAX_HEAD_BYTES:
            raise HttpError(431, f"{what} head larger than {MAX_HEAD_BYTES} bytes")
        if not line:
            return lines or [b""]  # an empty first line: a malformed start line, refused by the caller
        lines.append(line)


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request head; None when the client closed cleanly between requests."""
    lines = await _read_head(reader, "request")
    if lines is None:
        return None
    parts = lines[0].decode("latin-1").split(" ")
    if len(parts) != 3 or not _METHOD.match(parts[0]) or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(400, f"malformed request line {lines[0][:80]!r}")
    if not _TARGET.match(parts[1]):
        raise HttpError(400, "the request target must be an absolute path")
    if parts[0] not in METHODS:
        raise HttpError(501, f"method {parts[0][:20]} is not one the Docker API uses")
    request = Request(start=lines[0].decode("latin-1"), headers=_headers(lines[1:]))
    request.method, request.target, request.version = parts
    for name in SINGLETONS:
        if len(request.values(name)) > 1:
            raise HttpError(400, f"{name} header repeated")
    if request.version == "HTTP/1.1" and not request.values("host"):
        raise HttpError(400, "an HTTP/1.1 request without a Host header")
    if any(request.values(name) for name in UNFRAMED_BODY_HEADERS):
        raise HttpError(400, "the hixie-76 WebSocket handshake (a body without framing) is not accepted")
    request.body_length()  # refuse ambiguous framing before anything else
    return request


async def read_response(reader: asyncio.StreamReader) -> Response:
    lines = await _read_head(reader, "response")
    if lines is None:
        raise HttpError(502, "the Docker daemon closed the connection without answering")
    match = _STATUS.match(lines[0])
    if not match:
        raise HttpError(502, f"malformed status line from the daemon {lines[0][:80]!r}")
    response = Response(start=lines[0].decode("latin-1"), headers=_headers(lines[1:]))
    response.status = int(match.group(1))
    return response


def response_has_body(method: str, status: int) -> bool:
    return method != "HEAD" and status >= 200 and status not in (204, 304)


async def read_body(reader: asyncio.StreamReader, length: int | None, limit: int) -> bytes:
    """A whole body (Content-Length, chunked, or -1: until close) of at most `limit` bytes, else 413."""
    if length is None:
        return await _read_chunked(reader, limit)
    if length < 0:
        data = await reader.read(limit + 1)
        while data and len(data) <= limit:
            more = await reader.read(limit + 1 - len(data))
            if not more:
                break
            data += more
        if len(data) > limit:
            raise HttpError(413, f"body larger than {limit} bytes")
        return data
    if length > limit:
        raise HttpError(413, f"body of {length} bytes is larger than the {limit} bytes allowed")
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise HttpError(400, "body shorter than its Content-Length") from None


async def _read_chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    try:
        while True:
            line = await _line(reader)
            size_text = line.split(b";", 1)[0]  # 1*HEXDIG (RFC 9112 7.1), no blanks around it
            if len(size_text) > 15 or not _HEX.fullmatch(size_text):
                raise HttpError(400, "malformed chunk size")
            size = int(size_text, 16)
            if size == 0:
                trailers = []
                while trailer := await _line(reader):
                    trailers.append(trailer)
                _headers(trailers)  # checked like header lines, then dropped
                return b"".join(parts)
            total += size
            if total > limit:
                raise HttpError(413, f"body larger than {limit} bytes")
            parts.append(await reader.readexactly(size))
            if await reader.readexactly(2) != b"\r\n":
                raise HttpError(400, "malformed chunk")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        raise HttpError(400, "truncated chunked body") from None


def encode_head(start: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [start, *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def json_response(status: int, payload: object, *, close: bool = False) -> bytes:
    """A complete response with a JSON body (Content-Length framed)."""
    return json_bytes_response(status, json.dumps(payload).encode(), close=close)


def json_bytes_response(status: int, body: bytes, *, close: bool = False) -> bytes:
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    if close:
        headers.append(("Connection", "close"))
    return encode_head(f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}", headers) + body


def error_response(status: int, message: str, *, close: bool = False) -> bytes:
    """What the docker SDK shows: `{"message": ...}`."""
    return json_response(status, {"message": message}, close=close)


async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, length: int = -1) -> None:
    """Copy bytes as they come: `length` bytes, or until the source closes (-1)."""
    remaining = length
    while remaining != 0:
        data = await source.read(CHUNK if remaining < 0 else min(CHUNK, remaining))
        if not data:
            if remaining > 0:
                raise ConnectionError("the daemon closed the connection mid-body")
            return
        sink.write(data)
        await sink.drain()
        if remaining > 0:
            remaining -= len(data)
