"""Reading a container's result file: everything in the run directory is the container's to choose."""

from __future__ import annotations

import json
import os

import pytest

from dood.exceptions import ResultFileError
from dood.lifecycle.results import MAX_RESULT_DEPTH, RESULT_FILE_NAME, nesting_depth, read_result, result_env


def test_json_written_by_the_container_is_the_result(tmp_path):
    (tmp_path / RESULT_FILE_NAME).write_text('{"accuracy": 0.93}')
    assert read_result(tmp_path, 1024) == {"accuracy": 0.93}


def test_no_file_or_no_run_directory_means_no_value(tmp_path):
    assert read_result(tmp_path, 1024) is None
    assert read_result(tmp_path / "gone", 1024) is None


@pytest.mark.parametrize("target", ["/etc/hostname", "/dev/zero", "missing-target"])
def test_a_symlinked_result_is_refused_without_reading_its_target(tmp_path, target):
    (tmp_path / RESULT_FILE_NAME).symlink_to(target)
    with pytest.raises(ResultFileError, match="is a symlink"):
        read_result(tmp_path, 1024)


def test_a_symlinked_run_directory_is_refused(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / RESULT_FILE_NAME).write_text("{}")
    (tmp_path / "run").symlink_to(tmp_path / "real")
    with pytest.raises(ResultFileError, match="cannot be opened safely"):
        read_result(tmp_path / "run", 1024)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / RESULT_FILE_NAME)
    with pytest.raises(ResultFileError, match="not a regular file"):
        read_result(tmp_path, 1024)


def test_reading_stops_past_the_limit(tmp_path):
    (tmp_path / RESULT_FILE_NAME).write_text("[" + "1," * 5000 + "1]")
    with pytest.raises(ResultFileError, match="larger than max_result_bytes=1024"):
        read_result(tmp_path, 1024)


def test_invalid_json_is_reported_without_echoing_the_content(tmp_path):
    (tmp_path / RESULT_FILE_NAME).write_text("service-account-key: s3cr3t")
    with pytest.raises(ResultFileError, match="not valid JSON") as caught:
        read_result(tmp_path, 1024)
    assert "s3cr3t" not in str(caught.value)


def test_the_container_is_told_where_to_write():
    assert result_env() == {
        "DOOD_RESULT_FILE": "/dood/run/result.json",
        "DOOD_RUN_DIR": "/dood/run",
        "DOOD_NO_RETRY_EXIT_CODE": "97",
    }


def test_a_directory_at_the_result_path_is_refused(tmp_path):
    (tmp_path / RESULT_FILE_NAME).mkdir()
    with pytest.raises(ResultFileError, match=r"result\.json is not a regular file \(a directory"):
        read_result(tmp_path, 1024)


@pytest.mark.parametrize(
    ("content", "what"),
    [
        ("[" * 100_000 + "]" * 100_000, "nests arrays or objects 100000 levels deep"),
        ('{"a":' * 5_000 + "1" + "}" * 5_000, "nests arrays or objects 5000 levels deep"),
        ("[" * (MAX_RESULT_DEPTH + 1) + "]" * (MAX_RESULT_DEPTH + 1), f"{MAX_RESULT_DEPTH + 1} levels deep"),
        ("[" * 100_000, "nests arrays or objects 100000 levels deep"),  # unclosed: still never parsed
        ("9" * 900_000, "has an integer of 900000 digits"),
        ('{"n": -' + "9" * 4_301 + "}", "has an integer of 4301 digits"),
        ('{"loss": NaN}', "has NaN, which is not a JSON number"),
        ("[Infinity]", "has Infinity"),
        ("[-Infinity]", "has -Infinity"),
        ('{"x": 1e999}', r"has a number beyond a float's range \(1e999\)"),
        ("[-1e999]", r"\(-1e999\)"),
        ('{"s": "a\\u0000b"}', r"has a NUL character \(\\u0000\) in a string"),
        ('{"a\\u0000": 1}', "has a NUL character"),  # keys too
        ('[["\\ud800"]]', r"has an unpaired surrogate \(\\ud800\) in a string"),
        ('{"s": "x\\uDFFFy"}', r"unpaired surrogate \(\\udfff\)"),
    ],
)
def test_json_an_xcom_cannot_carry_is_refused_with_the_fix(tmp_path, content, what):
    (tmp_path / RESULT_FILE_NAME).write_text(content)
    with pytest.raises(ResultFileError, match=what) as caught:
        read_result(tmp_path, 2_000_000)
    message = str(caught.value)
    assert str(tmp_path / RESULT_FILE_NAME) in message
    assert "write plain JSON: finite numbers" in message and f"at most {MAX_RESULT_DEPTH} levels deep" in message


@pytest.mark.parametrize(
    "content",
    [
        "[" * MAX_RESULT_DEPTH + "]" * MAX_RESULT_DEPTH,
        '{"brackets in strings": "' + "[{" * 1_000 + '", "escaped": "\\"[[["}',
        '{"n": ' + "9" * 4_300 + ', "f": 1.5e308, "neg": -0.0}',
        '{"emoji": "\\ud83d\\ude00", "not a NUL": "\\\\u0000", "nbsp": "\\u00a0"}',  # a pair, an escaped backslash
    ],
)
def test_plain_json_at_the_limits_is_accepted(tmp_path, content):
    (tmp_path / RESULT_FILE_NAME).write_text(content)
    assert read_result(tmp_path, 2_000_000) == json.loads(content)


def test_an_unclosed_string_is_reported_as_invalid_json_not_as_depth(tmp_path):
    (tmp_path / RESULT_FILE_NAME).write_text('["' + "[" * 1_000)
    with pytest.raises(ResultFileError, match="not valid JSON .Unterminated string"):
        read_result(tmp_path, 2_000_000)


def test_nesting_depth_counts_brackets_outside_strings_only():
    assert nesting_depth("") == 0
    assert nesting_depth('{"a": [1, {"b": "]]]]"}]}') == 3
    assert nesting_depth('["\\\\", ["\\"]"]]') == 2
    assert nesting_depth("]]]][[") == 0


def test_a_read_error_is_a_result_file_error(tmp_path, monkeypatch):
    (tmp_path / RESULT_FILE_NAME).write_text("{}")

    class FailingFile:
        def __init__(self, fd, mode):
            os.close(fd)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, size):
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdopen", FailingFile)
    with pytest.raises(ResultFileError, match=r"result\.json cannot be read \(Input/output error\)"):
        read_result(tmp_path, 1024)
