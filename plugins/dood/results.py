"""The results contract: a container writes JSON to $DOOD_RESULT_FILE; that becomes the task's XCom.

Each container gets its own run directory (under the config's `runs_root`, named after the container),
bind-mounted at RUN_DIR_IN_CONTAINER. No file means no value: the last log line is never a result.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dood.exceptions import ResultFileError

RUN_DIR_IN_CONTAINER = "/dood/run"
RESULT_FILE_NAME = "result.json"
RESULT_FILE_ENV = "DOOD_RESULT_FILE"
RUN_DIR_ENV = "DOOD_RUN_DIR"


def run_dir_for(runs_root: str, container_name: str) -> str:
    """The Airflow-side run directory of a container: derived from its name, so any process finds it."""
    return f"{runs_root}/{container_name}"


def prepare_run_dir(runs_root: str, container_name: str) -> Path:
    """Create an empty run directory any container user can write to (its uid is unknown to us)."""
    run_dir = Path(run_dir_for(runs_root, container_name))
    run_dir.mkdir(parents=True, exist_ok=True)
    stale = run_dir / RESULT_FILE_NAME
    if stale.exists():
        stale.unlink()  # a leftover from a crashed attempt of this same try must not be mistaken for ours
    os.chmod(run_dir, 0o777)  # noqa: S103 - the launched container may run as any uid
    return run_dir


def result_env() -> dict[str, str]:
    """Environment variables telling the container where to write its result."""
    return {RESULT_FILE_ENV: f"{RUN_DIR_IN_CONTAINER}/{RESULT_FILE_NAME}", RUN_DIR_ENV: RUN_DIR_IN_CONTAINER}


def read_result(run_dir: str | os.PathLike[str], max_bytes: int) -> Any:
    """The JSON the container wrote, or None when it wrote nothing."""
    path = Path(run_dir) / RESULT_FILE_NAME
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if size > max_bytes:
        raise ResultFileError(
            f"Result file {path} is {size} bytes, above max_result_bytes={max_bytes}. Write large outputs to a "
            "mounted directory and return only their path and summary metrics."
        )
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultFileError(f"Result file {path} is not valid JSON ({exc}); first bytes: {text[:200]!r}") from None
