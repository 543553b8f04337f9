"""The results contract: a container writes JSON to $DOOD_RESULT_FILE; that becomes the task's XCom.

Each container gets its own run directory (under the config's `runs_root`, named after the container),
bind-mounted at RUN_DIR_IN_CONTAINER. No file means no value: the last log line is never a result.
"""

from __future__ import annotations

import errno
import itertools
import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

from dood.exceptions import ResultFileError

RUN_DIR_IN_CONTAINER = "/dood/run"
RESULT_FILE_NAME = "result.json"
RESULT_FILE_ENV = "DOOD_RESULT_FILE"
RUN_DIR_ENV = "DOOD_RUN_DIR"
#: Exit code by which a step says "my failure is final, do not retry" (a failed quality gate: retrying cannot
#: change the verdict). Told to the container as $DOOD_NO_RETRY_EXIT_CODE.
NO_RETRY_EXIT_CODE = 97
NO_RETRY_EXIT_CODE_ENV = "DOOD_NO_RETRY_EXIT_CODE"


def run_dir_for(runs_root: str, container_name: str) -> str:
    """The Airflow-side run directory of a container: derived from its name, so any process finds it."""
    return f"{runs_root}/{container_name}"


def result_env() -> dict[str, str]:
    """Environment variables telling the container where to write its result."""
    return {
        RESULT_FILE_ENV: f"{RUN_DIR_IN_CONTAINER}/{RESULT_FILE_NAME}",
        RUN_DIR_ENV: RUN_DIR_IN_CONTAINER,
        NO_RETRY_EXIT_CODE_ENV: str(NO_RETRY_EXIT_CODE),
    }


def read_result(run_dir: str | os.PathLike[str], max_bytes: int) -> Any:
    """The JSON the container wrote, or None when it wrote nothing.

    Everything in the run directory is the container's to choose, so the file is opened without following
    a symlink (in the directory's own entry or the file's), must be a regular file (not a FIFO, not
    `/dev/zero`), and at most `max_bytes + 1` bytes are ever read.
    """
    path = Path(run_dir) / RESULT_FILE_NAME
    try:
        directory = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ResultFileError(f"Run directory {run_dir} cannot be opened safely ({exc.strerror})") from None
    try:
        try:
            fd = os.open(RESULT_FILE_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=directory)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ResultFileError(
                    f"Result file {path} is a symlink; a result must be a regular file the container wrote"
                ) from None
            raise ResultFileError(f"Result file {path} cannot be opened ({exc.strerror})") from None
    finally:
        os.close(directory)
    try:
        # checked on the descriptor before any read: a directory opens too, and only reading it fails
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ResultFileError(
                f"Result file {path} is not a regular file (a directory, FIFO or device); "
                f"write the result as a plain file at ${RESULT_FILE_ENV}"
            )
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(max_bytes + 1)
        except OSError as exc:  # whatever reading fails on is the file's, reported as such (never a teardown)
            raise ResultFileError(f"Result file {path} cannot be read ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise ResultFileError(
            f"Result file {path} is larger than max_result_bytes={max_bytes}. Write large outputs to a "
            "mounted directory and return only their path and summary metrics."
        )
    return parse_result(data, str(path))


#: How deeply a result's arrays and objects may nest. Far deeper than any metrics record, far shallower
#: than what would exhaust Python's recursion (the json module's parser, and whatever serializes the XCom).
MAX_RESULT_DEPTH = 64
#: The most digits an integer may have: Python's own limit on converting ints to and from text (sys.int_info),
#: past which the XCom could not be serialized.
MAX_INT_DIGITS = 4300
_PLAIN_JSON = (
    f"write plain JSON: finite numbers (no NaN or Infinity, nothing beyond a float's range), integers of at most "
    f"{MAX_INT_DIGITS} digits, arrays and objects nested at most {MAX_RESULT_DEPTH} levels deep, strings "
    "without \\u0000 or unpaired surrogates"
)
#: A `\u` escape of NUL or of a surrogate: the only ways a result's strings can hold either (raw, a NUL is a
#: control character json refuses, a surrogate is not UTF-8). A hit has the parsed strings looked at.
_NUL_OR_SURROGATE_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_NUL_OR_LONE_SURROGATE = re.compile("[\x00\ud800-\udfff]")
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKETS = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class _NotPlain(ValueError):
    """A value json would accept but an XCom cannot carry (raised from the parser's hooks)."""


def _parse_int(text: str) -> int:
    digits = len(text) - text.startswith("-")
    if digits > MAX_INT_DIGITS:
        raise _NotPlain(f"has an integer of {digits} digits")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotPlain(f"has a number beyond a float's range ({text[:20]}{'…' if len(text) > 20 else ''})")
    return value


def _parse_constant(name: str) -> float:
    raise _NotPlain(f"has {name}, which is not a JSON number")


def _check_strings(value: Any) -> None:
    """Refuse a NUL (PostgreSQL's JSONB, where Airflow keeps XComs, cannot store one) or an unpaired
    surrogate (not encodable as UTF-8: the XCom push fails) in any string or key; walked without recursion."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str) and (found := _NUL_OR_LONE_SURROGATE.search(item)):
            char = found[0]
            what = "a NUL character (\\u0000)" if char == "\x00" else f"an unpaired surrogate (\\u{ord(char):04x})"
            raise _NotPlain(f"has {what} in a string")


def nesting_depth(text: str) -> int:
    """How deeply arrays and objects nest in JSON `text`, found without recursion: the brackets outside strings."""
    outside = _STRING.sub("", text)
    unclosed = outside.find('"')  # a string that never ends: all that follows is inside it, for json too
    brackets = _BRACKETS.sub("", outside if unclosed < 0 else outside[:unclosed])
    if not brackets:
        return 0
    return max(0, max(itertools.accumulate(map(_DEPTH_STEP.__getitem__, brackets))))


def parse_result(data: bytes, path: str) -> Any:
    """A result file's bytes as a JSON value an XCom can carry, or ResultFileError naming `path` and the fix.

    Plain JSON only: UTF-8, nesting at most MAX_RESULT_DEPTH levels deep (checked before parsing, so a deep file
    never reaches the recursive parser), integers within Python's digit limit, finite numbers (the json
    module accepts NaN, Infinity and 1e999; Airflow's XCom then cannot store them), strings without NUL or
    unpaired surrogates (the XCom push fails on one, PostgreSQL's JSONB on the other).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ResultFileError(
            f"Result file {path} is not valid JSON (not UTF-8: {exc.reason} at byte {exc.start}); "
            f"it is {len(data)} bytes; {_PLAIN_JSON}"
        ) from None
    depth = nesting_depth(text)
    if depth > MAX_RESULT_DEPTH:
        raise ResultFileError(
            f"Result file {path} nests arrays or objects {depth} levels deep (at most {MAX_RESULT_DEPTH}); "
            f"{_PLAIN_JSON}"
        )
    try:
        value = json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
        if _NUL_OR_SURROGATE_ESCAPE.search(text):  # rare: only then are the parsed strings looked at
            _check_strings(value)
        return value
    except _NotPlain as exc:
        raise ResultFileError(f"Result file {path} {exc}; {_PLAIN_JSON}") from None
    except json.JSONDecodeError as exc:
        raise ResultFileError(f"Result file {path} is not valid JSON ({exc}); it is {len(data)} bytes") from None
    except (ValueError, RecursionError) as exc:  # not expected past the checks above; never a raw traceback
        raise ResultFileError(
            f"Result file {path} cannot be read as JSON ({type(exc).__name__}); {_PLAIN_JSON}"
        ) from None
