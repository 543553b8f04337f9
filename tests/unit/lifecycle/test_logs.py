from __future__ import annotations

import logging

import pytest

from dood.lifecycle.logs import LineForwarder, task_log_emitter


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


# --- a container's output is text only: nothing in it acts on a terminal or a log viewer ---


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"\x1b[2J\x1b[Hwiped", "\u241b[2J\u241b[Hwiped"),  # clear screen, cursor home: visible, inert
        (
            b"\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\",
            "\u241b]8;;https://evil.example/\u241b\\click\u241b]8;;\u241b\\",
        ),
        (b"\x1bPq#0;2;0;0;0\x1b\\", "\u241bPq#0;2;0;0;0\u241b\\"),  # DCS (sixel)
        (b"\xc2\x9b2J \xc2\x9d8;;x\xc2\x9c", "<U+009B>2J <U+009D>8;;x<U+009C>"),  # C1 CSI, OSC, ST
        (b"secret\x08\x08\x08\x08\x08\x08public", "secret\u2408\u2408\u2408\u2408\u2408\u2408public"),
        (b"bell\x07 nul\x00 del\x7f vt\x0b ff\x0c fs\x1c", "bell\u2407 nul\u2400 del\u2421 vt\u240b ff\u240c fs\u241c"),
        (b"tab\tstays", "tab\tstays"),
        (
            "access \u202egnp.exe\u202c \u2066x\u2069 \u2028y".encode(),
            "access <U+202E>gnp.exe<U+202C> <U+2066>x<U+2069> <U+2028>y",
        ),
        (b"\x1b[1;31mred\x1b[0m \x1b[38:5:196mplain\x1b[m", "red plain"),  # colour codes carry no text: dropped
    ],
)
def test_control_sequences_reach_the_log_visible_and_inert(raw, shown):
    lines, fwd = run([raw + b"\n"])
    assert lines == [shown]
    assert list(fwd.tail) == [shown]  # the failure message quotes the tail: inert too


def test_a_carriage_return_keeps_what_a_terminal_would_show():
    lines, _ = run(
        [b"real output\rMarking task as SUCCESS\n", b"100 errors\rOK\n", b"  0%\r 50%\r100%\r\n", b"crlf\r\n"]
    )
    # the forged text stays after the log's own prefix (as a plain line would); it cannot overwrite the prefix
    assert lines == ["Marking task as SUCCESS", "OK0 errors", "100%", "crlf"]


def test_many_carriage_returns_cost_no_more_than_the_line():
    line = b"x" * 30000 + b"\ry" * 15000 + b"\n"  # rebuilt naively, each part copies the line: 450 MB
    lines, _ = run([line], max_line_bytes=1 << 20)
    assert lines == ["y" + "x" * 29999]


def test_controls_are_caught_across_chunks_and_in_batched_records():
    records = []
    fwd = LineForwarder(records.append, lines_per_record=10)
    fwd.consume([b"ok\nhalf \x1b", b"[2J done\nplain\r", b"\nlast\x1b[31m", b"\n\x07a\nb\n"])
    assert records == ["ok", "half \u241b[2J done", "plain", "last\n\u2407a\nb"]
    assert fwd.lines == 6  # records: the lines of one chunk


def test_an_overlong_line_cut_mid_sequence_stays_inert():
    lines, _ = run([b"a" * 10 + b"\x1b", b"]0;title\x07\n"], max_line_bytes=8)
    assert "".join(lines) == "a" * 10 + "\u241b]0;title\u2407"
    assert all("\x1b" not in line and "\x07" not in line for line in lines)


def test_a_forged_failure_line_is_not_hidden_behind_colour():
    log = _Recorder()
    LineForwarder(task_log_emitter(log)).feed(b"\x1b[31mFAILED: gate\x1b[0m\n")
    assert log.records == [("error", "FAILED: gate")]


def test_plain_text_is_left_alone():
    text = "café 東京 — “quoted” … ✓ █▉▊ \u00a0nbsp"
    lines, _ = run([text.encode() + b"\n"])
    assert lines == [text]


@pytest.mark.parametrize(
    "code",
    [
        *range(0x00, 0x09),
        *range(0x0B, 0x20),
        *range(0x7F, 0xA0),
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
        0x2028,
        0x2029,
    ],
)
def test_every_active_code_point_is_shown_not_passed(code):
    lines, _ = run([f"a{chr(code)}b\n".encode()])
    assert chr(code) not in "".join(lines)
