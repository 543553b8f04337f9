"""Forward a container's output into the task log line by line, in bounded memory.

Only the last `tail_lines` lines are kept (for the failure message); a line longer than
`max_line_bytes` is cut into pieces rather than buffered without limit. Lines that arrived together (one
chunk read from Docker) may share one log record, at most `lines_per_record` of them, in order and without
delay: each record costs Airflow's whole structlog chain (~20-25 us), more than reading a line does.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable

DEFAULT_TAIL_LINES = 50
DEFAULT_MAX_LINE_BYTES = 64 * 1024


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
        if chunk.endswith(b"\n"):
            pieces = chunk[:-1].split(b"\n")
        else:
            *pieces, self._partial = chunk.split(b"\n")
            if len(self._partial) > self._max_line_bytes:
                pieces.append(self._partial)
                self._partial = b""
                self._just_cut = True
        if self._lines_per_record > 1 and len(pieces) > 1:
            self._lines([raw.decode("utf-8", errors="replace").rstrip("\r") for raw in pieces])
            return
        for piece in pieces:
            self._line(piece)

    def _lines(self, lines: list[str]) -> None:
        self.lines += len(lines)
        self.tail.extend(lines[-(self.tail.maxlen or len(lines)) :])
        step = self._lines_per_record
        for start in range(0, len(lines), step):
            self._emit("\n".join(lines[start : start + step]))

    def close(self) -> None:
        """Emit what is left of an unterminated last line."""
        if self._partial:
            self._line(self._partial)
            self._partial = b""

    def _line(self, raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
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
