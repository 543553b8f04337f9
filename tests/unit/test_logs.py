from __future__ import annotations

import logging

import pytest

from dood.logs import LineForwarder, task_log_emitter


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


class _Recorder:
    """A logger that records (level, text) in order; no `bind`, as a stdlib logger."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []

    def info(self, fmt: str, text: str) -> None:
        self.records.append(("info", fmt % text))

    def error(self, fmt: str, text: str) -> None:
        self.records.append(("error", fmt % text))


@pytest.mark.parametrize(
    "line",
    [
        "[evaluate] FAILED: accuracy 0.91 is below min_accuracy 0.999",
        "FAILED: no data for 2026-10-04",
        "ERROR:root:could not open the partition",
        "CRITICAL out of memory",
        "[train] FATAL: cuda error",
    ],
)
def test_a_steps_failure_line_is_logged_at_error_level(line):
    log = _Recorder()
    task_log_emitter(log)(line)
    assert log.records == [("error", line)]


@pytest.mark.parametrize(
    "line",
    ["[train] 12 FAILED_BATCHES so far", "[evaluate] accuracy 0.97 (no ERRORs)", "tests FAILED? no", "INFO done"],
)
def test_other_lines_stay_at_info_level(line):
    log = _Recorder()
    task_log_emitter(log)(line)
    assert log.records == [("info", line)]


def test_a_record_of_lines_is_split_around_the_failure_line_in_order():
    log = _Recorder()
    emit = task_log_emitter(log)
    LineForwarder(emit, lines_per_record=10).feed(
        b"[evaluate] a\n[evaluate] b\n[evaluate] FAILED: gate\n[evaluate] c\n"
    )
    assert log.records == [
        ("info", "[evaluate] a\n[evaluate] b"),
        ("error", "[evaluate] FAILED: gate"),
        ("info", "[evaluate] c"),
    ]


def test_a_stdlib_logger_gets_the_error_record(caplog):
    caplog.set_level(logging.INFO, logger="dood.test_logs")
    task_log_emitter(logging.getLogger("dood.test_logs"))("[evaluate] FAILED: gate")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(logging.ERROR, "[evaluate] FAILED: gate")]
