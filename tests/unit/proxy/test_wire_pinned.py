"""dood-proxy's request framing (dood.proxy.wire), pinned to aiohttp's request parsers on hostile inputs.

wire.py is a deliberate re-implementation (the proxy imports no HTTP library); this test keeps it honest the way
tests/unit/policy/test_sizes.py keeps `parse_bytes` honest against the docker SDK. Every case of the corpus is fed,
as one byte stream ending in EOF, to wire.py (read_request + read_body, as the proxy's server does) and to each of
aiohttp's request parsers: llhttp (`HttpRequestParserC`) and the pure-Python one (`HttpRequestParserPy`). The pin:

- whatever wire.py accepts, the reference accepts too, with the same requests: method, target, keep-alive, upgrade
  and the same body bytes, so that both agree where each request ends (a pipelined second request included);
- whatever the reference refuses, wire.py refuses: wire.py may only be stricter, and each case where it is, is
  named in STRICTER with the reason.

Cases where wire.py accepts what a reference refuses are listed in LAXER and run as strict xfails: each is a known
disagreement, reported, not papered over; the day wire.py refuses it, the xfail passes and the entry must go.
(Upstream, the proxy re-frames each request itself: a new connection, its own Content-Length, no Transfer-Encoding;
so where framing matters most is with whatever stands in front of the proxy, a TLS terminator or a load balancer.)

The references get wire.py's size limits (a 64 KiB head, as many header lines as fit), so that the comparison is
about framing, not about where each draws its size limits. "Refused" on the reference's side is an
HttpProcessingError from feed_data/feed_eof or its body stream, or a head left incomplete at EOF (a server closes
without serving it).
"""

from __future__ import annotations

import asyncio
import functools

import pytest
from aiohttp import http_parser
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_exceptions import HttpProcessingError

from dood.proxy import wire

LIMIT = 1 << 20  # read_body's limit: far above every body of the corpus, so 413 never decides a case
HOST = b"Host: docker\r\n"
PING = b"GET /_ping HTTP/1.1\r\n" + HOST + b"\r\n"
NEXT = b"GET /y HTTP/1.1\r\n" + HOST + b"\r\n"


def post(head: bytes = b"", body: bytes = b"", line: bytes = b"POST /x HTTP/1.1") -> bytes:
    return line + b"\r\n" + HOST + head + b"\r\n" + body


def chunked(body: bytes, head: bytes = b"Transfer-Encoding: chunked\r\n") -> bytes:
    return post(head, body)


def get(line: bytes) -> bytes:
    return line + b"\r\n" + HOST + b"\r\n"


# fmt: off
CASES = {
    # valid requests: both sides must read them the same
    "valid-get": PING,
    "valid-post-content-length": post(b"Content-Length: 2\r\n", b"{}"),
    "valid-chunked": chunked(b"2\r\n{}\r\n0\r\n\r\n"),
    "valid-get-with-content-length": get(b"GET /x HTTP/1.1")[:-2] + b"Content-Length: 2\r\n\r\n{}",
    "valid-http10": b"GET /x HTTP/1.0\r\n\r\n",
    "valid-http10-keep-alive": b"GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "valid-connection-close": post(b"Connection: close\r\nContent-Length: 1\r\n", b"x"),
    "valid-connection-keep-alive-close": post(b"Connection: keep-alive, close\r\n"),
    "valid-upgrade-tcp": post(b"Connection: Upgrade\r\nUpgrade: tcp\r\n", b"\x01\x00\x00\x00raw stream"),
    "valid-upgrade-with-body": post(b"Connection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 2\r\n", b"{}"),
    "valid-connection-upgrade-without-upgrade": post(b"Connection: Upgrade\r\n"),
    "valid-query": get(b"GET /containers/json?all=1&filters=%7B%7D HTTP/1.1"),
    "valid-long-header": post(b"X-Registry-Auth: " + b"a" * 9000 + b"\r\n"),
    "valid-tab-in-value": post(b"X-A: a\tb\r\n"),
    "valid-obs-text-in-value": post(b"X-A: caf\xc3\xa9 \xff\r\n"),
    "empty-input": b"",
    "no-host-http11": b"GET /x HTTP/1.1\r\n\r\n",
    # Content-Length
    "cl-and-te": post(b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
    "te-and-cl": post(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"),
    "cl-twice-equal": post(b"Content-Length: 2\r\nContent-Length: 2\r\n", b"{}"),
    "cl-twice-equal-other-case": post(b"Content-Length: 2\r\ncontent-length: 2\r\n", b"{}"),
    "cl-twice-different": post(b"Content-Length: 2\r\nContent-Length: 3\r\n", b"{}x"),
    "cl-list": post(b"Content-Length: 2, 2\r\n", b"{}"),
    "cl-plus": post(b"Content-Length: +2\r\n", b"{}"),
    "cl-minus": post(b"Content-Length: -1\r\n", b"{}"),
    "cl-spaces-around": post(b"Content-Length:  2  \r\n", b"{}"),
    "cl-tabs-around": post(b"Content-Length:\t2\t\r\n", b"{}"),
    "cl-hex": post(b"Content-Length: 0x2\r\n", b"{}"),
    "cl-empty": post(b"Content-Length: \r\n"),
    "cl-leading-zeros": post(b"Content-Length: 002\r\n", b"{}"),
    "cl-16-digits": post(b"Content-Length: 0000000000000002\r\n", b"{}"),
    "cl-non-ascii-digit": post("Content-Length: \u0662\r\n".encode(), b"{}"),
    "cl-huge": post(b"Content-Length: 99999999999999999999999\r\n", b"{}"),
    "cl-2-pow-64": post(b"Content-Length: 18446744073709551616\r\n", b"{}"),
    "cl-body-too-short": post(b"Content-Length: 10\r\n", b"{}"),
    "cl-space-before-colon": post(b"Content-Length : 2\r\n", b"{}"),
    "cl-tab-before-colon": post(b"Content-Length\t: 2\r\n", b"{}"),
    # Transfer-Encoding
    "te-Chunked": chunked(b"2\r\n{}\r\n0\r\n\r\n", b"Transfer-Encoding: Chunked\r\n"),
    "te-chunked-chunked": chunked(b"2\r\n{}\r\n0\r\n\r\n", b"Transfer-Encoding: chunked, chunked\r\n"),
    "te-gzip-chunked": chunked(b"2\r\n{}\r\n0\r\n\r\n", b"Transfer-Encoding: gzip, chunked\r\n"),
    "te-chunked-gzip": chunked(b"2\r\n{}\r\n0\r\n\r\n", b"Transfer-Encoding: chunked, gzip\r\n"),
    "te-chunked-trailing-space": chunked(b"2\r\n{}\r\n0\r\n\r\n", b"Transfer-Encoding: chunked \r\n"),
    "te-tab-chunked": chunked(b"2\r\n{}\r\n0\r\n\r\n", b"Transfer-Encoding:\tchunked\r\n"),
    "te-xchunked": chunked(b"2\r\n{}\r\n0\r\n\r\n", b"Transfer-Encoding: xchunked\r\n"),
    "te-identity": chunked(b"", b"Transfer-Encoding: identity\r\n"),
    "te-twice": chunked(b"2\r\n{}\r\n0\r\n\r\n", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
    "te-on-http10": post(b"Transfer-Encoding: chunked\r\n", b"2\r\n{}\r\n0\r\n\r\n", line=b"POST /x HTTP/1.0"),
    "te-space-before-colon": chunked(b"2\r\n{}\r\n0\r\n\r\n", b"Transfer-Encoding : chunked\r\n"),
    # header lines
    "obs-fold-space": post(b"X-A: a\r\n b\r\nContent-Length: 2\r\n", b"{}"),
    "obs-fold-tab": post(b"X-A: a\r\n\tb\r\n"),
    "obs-fold-hiding-te": post(b"X-A: a\r\n Transfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
    "obs-fold-first-header": b"POST /x HTTP/1.1\r\n Host: docker\r\n\r\n",
    "bare-lf-everywhere": b"GET /x HTTP/1.1\nHost: docker\n\n",
    "bare-lf-in-header": b"GET /x HTTP/1.1\r\nHost: docker\nX: y\r\n\r\n",
    "bare-lf-end-of-head": b"GET /x HTTP/1.1\r\nHost: docker\r\n\n",
    "bare-cr-in-header": b"GET /x HTTP/1.1\r\nHost: docker\rX: y\r\n\r\n",
    "bare-cr-line-endings": b"GET /x HTTP/1.1\rHost: docker\r\r",
    "nul-in-value": post(b"X-A: a\x00b\r\n"),
    "ctl-in-value": post(b"X-A: a\x01b\r\n"),
    "esc-in-value": post(b"X-A: a\x1bb\r\n"),
    "del-in-value": post(b"X-A: a\x7fb\r\n"),
    "ctl-in-name": post(b"X\x01A: b\r\n"),
    "empty-name": post(b": b\r\n"),
    "no-colon": post(b"X-A b\r\n"),
    "non-ascii-name": post("X-\u00e9: b\r\n".encode()),
    "head-over-64k": post(b"X-Registry-Auth: " + b"a" * 70_000 + b"\r\n"),
    "duplicate-host": get(b"GET /x HTTP/1.1")[:-2] + HOST + b"\r\n",
    "duplicate-content-type": post(b"Content-Type: a\r\nContent-Type: b\r\n"),
    "sec-websocket-key1": post(b"Sec-WebSocket-Key1: 4 @1  46546xW%0l 1 5\r\n"),
    "sec-websocket-key1-with-key3": post(b"Sec-WebSocket-Key1: 4 @1  46546xW%0l 1 5\r\n", b"^n:ds[4U"),
    # request line
    "double-space-after-method": get(b"GET  /x HTTP/1.1"),
    "double-space-before-version": get(b"GET /x  HTTP/1.1"),
    "tab-after-method": get(b"GET\t/x HTTP/1.1"),
    "missing-version": get(b"GET /x"),
    "http-0.9": b"GET /x\r\n\r\n",
    "trailing-space-after-version": get(b"GET /x HTTP/1.1 "),
    "leading-space": get(b" GET /x HTTP/1.1"),
    "leading-empty-line": b"\r\n" + PING,
    "http-1.2": get(b"GET /x HTTP/1.2"),
    "http-2.0": get(b"GET /x HTTP/2.0"),
    "lowercase-version": get(b"GET /x http/1.1"),
    "lowercase-method": get(b"get /x HTTP/1.1"),
    "unknown-method": get(b"BREW /x HTTP/1.1"),
    "absolute-form": get(b"GET http://docker/x HTTP/1.1"),
    "asterisk-form": get(b"OPTIONS * HTTP/1.1"),
    "authority-form": get(b"CONNECT docker:2375 HTTP/1.1"),
    "space-in-target": get(b"GET /a b HTTP/1.1"),
    "fragment-in-target": get(b"GET /x#frag HTTP/1.1"),
    "non-ascii-target": get("GET /caf\u00e9 HTTP/1.1".encode()),
    "ctl-in-target": get(b"GET /a\x01b HTTP/1.1"),
    "empty-target": get(b"GET  HTTP/1.1"),
    # chunk framing
    "chunk-size-uppercase-hex": chunked(b"A\r\n0123456789\r\n0\r\n\r\n"),
    "chunk-size-leading-zeros": chunked(b"0002\r\n{}\r\n0\r\n\r\n"),
    "chunk-size-16-digits": chunked(b"0000000000000002\r\n{}\r\n0\r\n\r\n"),
    "chunk-extension": chunked(b"2;a=b\r\n{}\r\n0;c=d\r\n\r\n"),
    "chunk-extension-quoted": chunked(b'2;a="b;c"\r\n{}\r\n0\r\n\r\n'),
    "chunk-extension-space-before": chunked(b"2 ;a=b\r\n{}\r\n0\r\n\r\n"),
    "chunk-size-overflow": chunked(b"ffffffffffffffffff\r\n{}\r\n0\r\n\r\n"),
    "chunk-size-negative": chunked(b"-2\r\n{}\r\n0\r\n\r\n"),
    "chunk-size-plus": chunked(b"+2\r\n{}\r\n0\r\n\r\n"),
    "chunk-size-0x": chunked(b"0x2\r\n{}\r\n0\r\n\r\n"),
    "chunk-size-space-after": chunked(b"2 \r\n{}\r\n0\r\n\r\n"),
    "chunk-size-space-before": chunked(b" 2\r\n{}\r\n0\r\n\r\n"),
    "chunk-size-empty": chunked(b"\r\n{}\r\n0\r\n\r\n"),
    "chunk-missing-crlf-after-data": chunked(b"2\r\n{}0\r\n\r\n"),
    "chunk-data-longer-than-size": chunked(b"2\r\n{}x\r\n0\r\n\r\n"),
    "chunk-bare-lf-after-data": chunked(b"2\r\n{}\n0\r\n\r\n"),
    "chunk-bare-lf-size-line": chunked(b"2\n{}\r\n0\r\n\r\n"),
    "chunk-trailers": chunked(b"2\r\n{}\r\n0\r\nX-Trailer: v\r\n\r\n"),
    "chunk-trailer-malformed": chunked(b"2\r\n{}\r\n0\r\nnot a header\r\n\r\n"),
    "chunk-trailer-folded": chunked(b"2\r\n{}\r\n0\r\nX: a\r\n b\r\n\r\n"),
    "chunk-missing-final-crlf": chunked(b"2\r\n{}\r\n0\r\n"),
    "chunk-no-last-chunk": chunked(b"2\r\n{}\r\n"),
    # pipelining: the first request's body must end at the same byte
    "pipelined-after-get": PING + NEXT,
    "pipelined-after-content-length": post(b"Content-Length: 2\r\n", b"{}" + NEXT),
    "pipelined-after-content-length-0": post(b"Content-Length: 0\r\n", NEXT),
    "pipelined-after-chunked": chunked(b"2\r\n{}\r\n0\r\n\r\n" + NEXT),
    "pipelined-after-trailers": chunked(b"2\r\n{}\r\n0\r\nX-T: v\r\n\r\n" + NEXT),
    "pipelined-content-length-short": post(b"Content-Length: 1\r\n", b"{}" + NEXT),
    "pipelined-request-inside-chunk": chunked(b"1f\r\n" + NEXT[:-2] + b"\r\n0\r\n\r\n"),
    "pipelined-after-upgrade": post(b"Connection: Upgrade\r\nUpgrade: tcp\r\n", NEXT),
    "body-without-framing": get(b"GET /x HTTP/1.1") + b"hello",
    "incomplete-head": b"GET /x HTTP/1.1\r\n" + HOST,
}
# fmt: on

LLHTTP, PY = "llhttp", "py"
BOTH = frozenset({LLHTTP, PY})

# wire.py refuses, the reference accepts: stricter on purpose. {case: (references that accept, why)}
STRICTER: dict[str, tuple[frozenset[str], str]] = {
    "cl-16-digits": (BOTH, "a Content-Length of at most 15 digits: no bignum, no overflow to reason about"),
    "chunk-size-16-digits": (BOTH, "a chunk size of at most 15 hex digits, for the same reason"),
    "te-chunked-chunked": (frozenset({PY}), "exactly one coding, chunked: the proxy decodes no other"),
    "te-gzip-chunked": (BOTH, "no transfer coding but chunked (501): the proxy never decodes gzip"),
    "double-space-after-method": (frozenset({LLHTTP}), "exactly one SP between the request line's parts"),
    "double-space-before-version": (frozenset({LLHTTP}), "exactly one SP between the request line's parts"),
    "missing-version": (frozenset({LLHTTP}), "HTTP/0.9 is not spoken: the version is required"),
    "http-0.9": (frozenset({LLHTTP}), "HTTP/0.9 is not spoken: the version is required"),
    "leading-empty-line": (BOTH, "RFC 9112 2.2 lets a server skip an empty line first; the proxy's clients send none"),
    "http-1.2": (frozenset({PY}), "HTTP/1.0 and HTTP/1.1 only"),
    "http-2.0": (BOTH, "HTTP/1.0 and HTTP/1.1 only"),
    "lowercase-method": (frozenset({PY}), "methods are case-sensitive (RFC 9110 9.1); aiohttp's py parser upper-cases"),
    "absolute-form": (BOTH, "origin-form targets only: the proxy is no forward proxy"),
    "asterisk-form": (BOTH, "origin-form targets only"),
    "authority-form": (BOTH, "origin-form targets only: no CONNECT tunnels"),
    "non-ascii-target": (frozenset({PY}), "the target is visible ASCII (RFC 3986): the Docker API's paths are"),
    "unknown-method": (frozenset({PY}), "the Docker API's methods only (an allow-list; llhttp refuses it too)"),
}

# wire.py accepts, a reference refuses: known disagreements, run as strict xfails. {case: (references, why)}
LAXER: dict[str, tuple[frozenset[str], str]] = {}  # none since wire.py took the 12 the first run found (2026-12-07)

REFERENCES = {LLHTTP: getattr(http_parser, "HttpRequestParserC", None), PY: http_parser.HttpRequestParserPy}

Outcome = tuple[str, object]


@functools.cache  # the coverage test reads the same outcomes again
def _ours(raw: bytes) -> Outcome:
    """The requests wire.py reads from `raw`, as the proxy's server reads them, until EOF, an upgrade or a close."""

    async def run() -> Outcome:
        reader = asyncio.StreamReader(limit=wire.MAX_HEAD_BYTES)
        reader.feed_data(raw)
        reader.feed_eof()
        requests = []
        try:
            while (request := await wire.read_request(reader)) is not None:
                length = request.body_length()
                body = await wire.read_body(reader, None if length is None else max(length, 0), LIMIT)
                requests.append((request.method, request.target, request.keep_alive, request.wants_upgrade, body))
                if request.wants_upgrade or not request.keep_alive:
                    break  # the rest is the upgraded stream, or never read
        except wire.HttpError as exc:
            return ("refused", f"{exc.status} {exc.reason}")
        return ("ok", requests)

    return asyncio.run(run())


@functools.cache
def _theirs(reference: str, raw: bytes) -> Outcome:
    """The requests aiohttp's parser reads from the same bytes, with wire.py's size limits."""
    parser_class = REFERENCES[reference]
    assert parser_class is not None

    async def run() -> Outcome:
        loop = asyncio.get_running_loop()
        parser = parser_class(
            BaseProtocol(loop),
            loop,
            2**16,
            max_line_size=wire.MAX_HEAD_BYTES,
            max_field_size=wire.MAX_HEAD_BYTES,
            max_headers=wire.MAX_HEAD_BYTES // 4,
        )
        requests = []
        try:
            messages, _upgraded, _tail = parser.feed_data(raw)
            incomplete = bool(getattr(parser, "_lines", None) or getattr(parser, "_tail", None))
            if parser.feed_eof() is not None or incomplete:
                return ("refused", "a head left incomplete at EOF")
            for message, payload in messages:
                if not payload.is_eof() and payload.exception() is None:
                    return ("refused", "a body left incomplete at EOF")
                body = await payload.read()
                requests.append((message.method, message.path, not message.should_close, bool(message.upgrade), body))
                if message.upgrade or message.should_close:
                    break
        except HttpProcessingError as exc:
            return ("refused", f"{type(exc).__name__}: {exc.message}")
        return ("ok", requests)

    return asyncio.run(run())


def _params():
    for reference, parser_class in REFERENCES.items():
        for name, raw in CASES.items():
            marks = []
            if parser_class is None:
                marks.append(pytest.mark.skip(reason="aiohttp's C extension (llhttp) is not installed"))
            if reference in LAXER.get(name, ((), ""))[0]:
                reason = f"known disagreement, wire.py accepts what aiohttp refuses: {LAXER[name][1]}"
                marks.append(pytest.mark.xfail(strict=True, reason=reason))
            yield pytest.param(reference, name, raw, marks=marks, id=f"{reference}-{name}")


@pytest.mark.parametrize(("reference", "name", "raw"), list(_params()))
def test_wire_frames_requests_as_aiohttp_does(reference, name, raw):
    ours, theirs = _ours(raw), _theirs(reference, raw)
    if ours[0] == "ok":
        assert theirs == ours, f"wire.py read {ours[1]!r} from {raw[:300]!r}, {reference} {theirs!r}"
    else:
        stricter = reference in STRICTER.get(name, ((), ""))[0]
        if theirs[0] == "ok":
            assert stricter, f"wire.py refused ({ours[1]}) what {reference} reads as {theirs[1]!r}: {raw[:300]!r}"
        else:
            assert not stricter, f"STRICTER[{name!r}] names {reference}, which refuses it too ({theirs[1]}): drop it"


def test_the_corpus_covers_agreement_and_both_kinds_of_refusal():
    outcomes = {name: (_ours(raw)[0], _theirs(PY, raw)[0]) for name, raw in CASES.items()}
    assert len(CASES) >= 40
    assert ("ok", "ok") in outcomes.values() and ("refused", "refused") in outcomes.values()
    assert ("refused", "ok") in outcomes.values()  # stricter on purpose
    assert set(STRICTER) <= set(CASES) and set(LAXER) <= set(CASES)
    assert not set(STRICTER) & set(LAXER)
