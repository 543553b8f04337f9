"""Reading a container's result file: everything in the run directory is the container's to choose."""

from __future__ import annotations

import os

import pytest

from dood.exceptions import ResultFileError
from dood.results import RESULT_FILE_NAME, read_result, result_env


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
