from __future__ import annotations

from dood.logs import LineForwarder


def run(chunks, **kwargs):
    lines = []
    fwd = LineForwarder(lines.append, **kwargs).consume(chunks)
    return lines, fwd


def test_chunks_are_reassembled_into_lines():
    lines, fwd = run([b"a\nb", b"c\n", b"d\n\ne"])
    assert lines == ["a", "bc", "d", "", "e"]
    assert fwd.lines == 5


def test_tail_is_bounded():
    lines, fwd = run([f"{i}\n".encode() for i in range(1000)], tail_lines=50)
    assert len(lines) == 1000
    assert list(fwd.tail) == [str(i) for i in range(950, 1000)]


def test_overlong_line_is_cut_not_buffered():
    lines, _ = run([b"x" * 100, b"x" * 100, b"\nnext\n"], max_line_bytes=150)
    assert lines == ["x" * 200, "next"]


def test_invalid_utf8_and_crlf():
    lines, _ = run([b"caf\xe9\r\n"])
    assert lines == ["caf\ufffd"]


def test_demuxed_streams_keep_their_own_partial_lines_and_share_the_tail():
    lines = []
    fwd = LineForwarder(lines.append, tail_lines=3).consume_demuxed(
        [(b"out-a", None), (None, b"err-1\n"), (b"-b\nout-2\n", b"err-2")]
    )
    assert lines == ["err-1", "out-a-b", "out-2", "err-2"]
    assert list(fwd.tail) == ["out-a-b", "out-2", "err-2"]
    assert fwd.lines == 4


def test_lines_of_one_chunk_share_records_up_to_the_cap_in_order():
    records = []
    fwd = LineForwarder(records.append, tail_lines=4, lines_per_record=3)
    fwd.consume([b"1\n2\n3\n4\n5\n", b"6\n", b"7\n8"])
    assert records == ["1\n2\n3", "4\n5", "6", "7", "8"]  # "8" came unterminated: emitted at close
    assert list(fwd.tail) == ["5", "6", "7", "8"] and fwd.lines == 8
