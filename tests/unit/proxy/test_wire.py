"""dood-proxy's request framing (dood.proxy.wire): the proxy and the daemon must agree where a request ends."""

from __future__ import annotations

import asyncio

import pytest

from dood.proxy import wire


def parse(raw: bytes):
    async def run():
        reader = asyncio.StreamReader(limit=wire.MAX_HEAD_BYTES)
        reader.feed_data(raw)
        reader.feed_eof()
        request = await wire.read_request(reader)
        return request, await wire.read_body(
            reader, max(request.body_length(), 0) if request.body_length() is not None else None, 100
        )

    return asyncio.run(run())


def test_requests_are_parsed():
    request, body = parse(b"POST /containers/create HTTP/1.1\r\nHost: docker\r\nContent-Length: 2\r\n\r\n{}")
    assert (request.method, request.target, body, request.keep_alive) == ("POST", "/containers/create", b"{}", True)
    request, body = parse(b"POST /x HTTP/1.1\r\nHost: docker\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
    assert body == b"{}"
    request, _ = parse(b"POST /x HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
    assert request.wants_upgrade
    request, _ = parse(b"GET /x HTTP/1.0\r\n\r\n")
    assert not request.keep_alive


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"POST /x HTTP/1.1\r\nHost: docker\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\nHost: docker\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\nHost: docker\r\nContent-Length: +2\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\nHost: docker\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"POST /x HTTP/1.1\r\nHost: docker\r\nX: a\r\n b\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\nHost: docker\r\nX : a\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\nHost: docker\r\nX: a\nY: b\r\n\r\n", 400),
        (b"POST http://docker/x HTTP/1.1\r\nHost: docker\r\n\r\n", 400),
        (b"POST /x  HTTP/1.1\r\nHost: docker\r\n\r\n", 400),
        (b"POST /x HTTP/2.0\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\nHost: docker\r\nContent-Length: 500\r\n\r\n", 413),
        (b"POST /x HTTP/1.1\r\nHost: docker\r\nTransfer-Encoding: chunked\r\n\r\nff\r\n", 413),
        (b"POST /x HTTP/1.1\r\nHost: docker\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    ],
)
def test_ambiguous_requests_are_refused(raw, status):
    with pytest.raises(wire.HttpError) as caught:
        parse(raw)
    assert caught.value.status == status


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /_ping HTTP/1.1\nHost: docker\n\n",
        b"GET /_ping HTTP/1.1\r\nHost: docker\n\r\n",
        b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\n",
    ],
)
def test_bare_lf_is_refused_at_once_not_after_the_idle_timeout(raw):
    async def run():
        reader = asyncio.StreamReader(limit=wire.MAX_HEAD_BYTES)
        reader.feed_data(raw)  # and no EOF: the client waits for an answer
        return await asyncio.wait_for(wire.read_request(reader), 1)

    with pytest.raises(wire.HttpError) as caught:
        asyncio.run(run())
    assert caught.value.status == 400
    assert "bare CR or LF" in caught.value.reason


def test_bare_lf_in_chunk_framing_is_refused_at_once():
    async def run():
        reader = asyncio.StreamReader(limit=wire.MAX_HEAD_BYTES)
        reader.feed_data(b"2\n{}\n0\n\n")
        return await asyncio.wait_for(wire.read_body(reader, None, 100), 1)

    with pytest.raises(wire.HttpError) as caught:
        asyncio.run(run())
    assert caught.value.status == 400
