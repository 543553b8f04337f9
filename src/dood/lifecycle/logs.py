"""Forward a container's output into the task log line by line, in bounded memory.

Only the last `tail_lines` lines are kept (for the failure message); a line longer than
`max_line_bytes` is cut into pieces rather than buffered without limit. Lines that arrived together (one
chunk read from Docker) may share one log record, at most `lines_per_record` of them, in order and without
delay: each record costs Airflow's whole structlog chain (~20-25 us), more than reading a line does.

Every line is made inert for whoever reads the task log in a terminal or a browser (`inert`): a container's
output cannot clear the screen, hide text, link elsewhere, or rewrite the log's own lines.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol


class TaskLog(Protocol):
    """What dood writes to: a `logging.Logger`, or the task's own `self.log` (Airflow's structured logger)."""

    def info(self, msg: str, /, *args: Any) -> Any: ...

    def warning(self, msg: str, /, *args: Any) -> Any: ...


DEFAULT_TAIL_LINES = 50
DEFAULT_MAX_LINE_BYTES = 64 * 1024

#: What a terminal or a log viewer would act on rather than show: C0 controls but tab and newline (ESC, CR,
#: backspace, BEL...), DEL, C1 controls (U+0080-U+009F: CSI, OSC, DCS as single code points), the line and
#: paragraph separators (`str.splitlines()` and editors break lines there), bidirectional overrides and
#: isolates (U+202A-U+202E, U+2066-U+2069: "Trojan Source" reordering).
_ACTIVE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028-\u202e\u2066-\u2069]")
#: Colour and style (SGR: `ESC [ params m`): dropped, as nothing in them is text. Every other escape sequence
#: stays visible, its ESC shown as `␛` (`␛[2J`, `␛]8;;https://…`), so a reader sees something was tried.
_SGR = re.compile("\x1b\\[[0-9;:]*m")
_SGR_BYTES = re.compile(rb"\x1b\[[0-9;:]*m")
#: The bytes that start anything `_ACTIVE` matches, in UTF-8 (C1 controls are C2 80-9F, the separators, overrides
#: and isolates E2 80 A8-AE and E2 81 A6-A9), as a table mapping each of them to 0: a chunk without any is
#: forwarded without looking at its lines.
_MAYBE_ACTIVE = bytes(
    0 if byte in (*range(0x09), *range(0x0B, 0x20), 0x7F, 0xC2, 0xE2) else byte for byte in range(256)
)
_VISIBLE = {
    **{code: chr(0x2400 + code) for code in range(0x20) if code not in (0x09, 0x0A)},  # ␀ … ␟ (␛ for ESC)
    0x7F: "\u2421",  # ␡
    **{code: f"<U+{code:04X}>" for code in (*range(0x80, 0xA0), *range(0x2028, 0x202F), *range(0x2066, 0x206A))},
}


def inert(line: str) -> str:
    """`line` as text only: nothing in it acts on a terminal or a log viewer, and nothing is hidden.

    Tab stays. A carriage return is resolved as a terminal shows it, each part overwriting the start of the
    line (a progress bar keeps its last state; `real` CR `forged` shows `forged` after the log's own prefix,
    which it can no longer overwrite: the same as a plain line `forged` would). SGR colour codes are dropped;
    every other control becomes visible (`␛[2J`, `␈`, `␇`, `<U+202E>`). A line without any of them is
    returned as is, after one scan.
    """
    if _ACTIVE.search(line) is None:
        return line
    if "\r" in line:
        line = _overwritten(line)
    if "\x1b" in line:
        line = _SGR.sub("", line)
    return _ACTIVE.sub(_shown, line)


def _shown(match: re.Match[str]) -> str:
    return _VISIBLE[ord(match[0])]


def _overwritten(line: str) -> str:
    """What a terminal shows of `line` after its carriage returns: each part written over the start of the
    line. Built from the last part backwards, so a line of many short parts costs no more than its length."""
    parts = line.split("\r")
    shown = parts[-1]
    for part in reversed(parts[:-1]):
        if len(part) > len(shown):
            shown += part[len(shown) :]
    return shown


def _maybe_active(chunk: bytes) -> bool:
    return chunk.translate(_MAYBE_ACTIVE).find(0) >= 0  # ~1 GB/s: a regex or a translate with deletes is slower


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _inert_text(raw: bytes) -> str:
    return inert(raw.decode("utf-8", errors="replace"))


class LineForwarder:
    """Turns a stream of byte chunks into whole lines, emits each and remembers the last few."""

    def __init__(
        self,
        emit: Callable[[str], None],
        *,
        tail_lines: int = DEFAULT_TAIL_LINES,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        tail: deque[str] | None = None,
        lines_per_record: int = 1,
    ) -> None:
        self._emit = emit
        self._lines_per_record = max(1, lines_per_record)
        self._max_line_bytes = max_line_bytes
        self._partial = b""
        self._just_cut = False  # the previous piece was cut for length: its newline ends no new line
        self.tail: deque[str] = deque(maxlen=tail_lines) if tail is None else tail
        self.lines = 0

    def feed(self, chunk: bytes) -> None:
        if self._partial:
            chunk = self._partial + chunk
            self._partial = b""
        if self._just_cut and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._just_cut = False
        if b"\r" in chunk:  # CRLF line ends: the CR shows nothing (a terminal's reading, as `inert` does)
            chunk = chunk.replace(b"\r\n", b"\n")
        if b"\x1b" in chunk:  # colours: dropped in one pass over the chunk, not line by line
            chunk = _SGR_BYTES.sub(b"", chunk)
        decode = _inert_text if _maybe_active(chunk) else _text
        if chunk.endswith(b"\n"):
            pieces = chunk[:-1].split(b"\n")
        else:
            *pieces, self._partial = chunk.split(b"\n")
            if len(self._partial) > self._max_line_bytes:
                pieces.append(self._partial)
                self._partial = b""
                self._just_cut = True
        if self._lines_per_record > 1 and len(pieces) > 1:
            self._lines([decode(raw) for raw in pieces])
            return
        for piece in pieces:
            self._line(decode(piece))

    def _lines(self, lines: list[str]) -> None:
        self.lines += len(lines)
        self.tail.extend(lines[-(self.tail.maxlen or len(lines)) :])
        step = self._lines_per_record
        for start in range(0, len(lines), step):
            self._emit("\n".join(lines[start : start + step]))

    def close(self) -> None:
        """Emit what is left of an unterminated last line."""
        if self._partial:
            self._line(_inert_text(self._partial))
            self._partial = b""

    def _line(self, line: str) -> None:
        self.lines += 1
        self.tail.append(line)
        self._emit(line)

    def consume(self, chunks: Iterable[bytes]) -> LineForwarder:
        for chunk in chunks:
            self.feed(chunk)
        self.close()
        return self

    def consume_demuxed(self, frames: Iterable[tuple[bytes | None, bytes | None]]) -> LineForwarder:
        """`(stdout, stderr)` frames of a demultiplexed attach stream. Each stream keeps its own partial
        line (a stderr write never lands inside an unfinished stdout line); both share one tail."""
        err = LineForwarder(
            self._emit, max_line_bytes=self._max_line_bytes, tail=self.tail, lines_per_record=self._lines_per_record
        )
        for stdout, stderr in frames:
            if stdout:
                self.feed(stdout)
            if stderr:
                err.feed(stderr)
        self.close()
        err.close()
        self.lines += err.lines
        return self


#: A line by which a step says it failed, logged at error level so Airflow's log view highlights it:
#: "FAILED: …", "ERROR …", "CRITICAL", "FATAL", optionally after a "[step]" tag (the example image's
#: `log()`) or Python logging's "LEVEL:name:" prefix.
ERROR_LINE = re.compile(r"^(?:\[[^\]\n]{1,64}\] )?(?:FAILED|ERROR|CRITICAL|FATAL)\b")
_ERROR_WORDS = ("FAILED", "ERROR", "CRITICAL", "FATAL")


def task_log_emitter(logger) -> Callable[[str], None]:
    """Each container line (or record of lines) into a task's log, with the logger resolved once:
    an operator's `self.log` is a lazy proxy, costly on every line. A step's failure line (`ERROR_LINE`)
    goes out at error level, on its own; the lines around it keep their order, at info level."""
    bound = logger.bind() if hasattr(logger, "bind") else logger
    info, error = bound.info, bound.error

    def emit(text: str) -> None:
        if not any(word in text for word in _ERROR_WORDS):  # the common case costs one scan
            info("%s", text)
            return
        plain: list[str] = []
        for line in text.split("\n"):
            if ERROR_LINE.match(line):
                if plain:
                    info("%s", "\n".join(plain))
                    plain = []
                error("%s", line)
            else:
                plain.append(line)
        if plain:
            info("%s", "\n".join(plain))

    return emit
