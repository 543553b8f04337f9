"""The results contract: a container writes JSON to $DOOD_RESULT_FILE; that becomes the task's XCom.

Each container gets its own run directory (under the config's `runs_root`, named after the container),
bind-mounted at RUN_DIR_IN_CONTAINER. No file means no value: the last log line is never a result.
"""

from __future__ import annotations

import errno
import json
import os
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
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise ResultFileError(f"Result file {path} is not a regular file (a FIFO, device or directory)")
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ResultFileError(
            f"Result file {path} is larger than max_result_bytes={max_bytes}. Write large outputs to a "
            "mounted directory and return only their path and summary metrics."
        )
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultFileError(f"Result file {path} is not valid JSON ({exc}); it is {len(data)} bytes") from None
