"""Shared pieces of the benchmarks: the three variants, a stub task context, Airflow's task logging.

Every variant does the same job against the same Docker engine: create a container from IMAGE, start it,
follow its output until it ends, wait for its exit code, remove it.

* ``raw``    - the docker SDK's low-level ``APIClient`` directly (the floor).
* ``dood``   - ``DoodContainerOperator.execute(context)`` (the project's defaults, so up to 100 lines that
  arrived together per task-log record).
* ``docker`` - the provider's ``DockerOperator.execute(context)``, made comparable: ``auto_remove="force"``,
  ``mount_tmp_dir=False``, no XCom of the logs, the same unix socket.

Each variant builds its own API client inside the timed region, as a task does (one process per task try).
"""

from __future__ import annotations

import contextvars
import os
import resource
import tempfile
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

IMAGE = os.environ.get("DOOD_BENCH_IMAGE", "dood-test-busybox:latest")
DOCKER_URL = "unix:///var/run/docker.sock"
VARIANTS = ("raw", "dood", "docker")

_CONFIG_YAML = """\
# dood config used by the benchmarks (written by benchmarks/_common.py); the project defaults otherwise.
docker:
  url: {url}
runs_root: {runs_root}
policy:
  allowed_host_roots: ["{runs_root}"]
defaults:
  auto_remove: always
  pull_policy: if_not_present
"""


def write_dood_config(workdir: Path, lines_per_record: int | None = None) -> Path:
    """A small config of our own, so the numbers do not depend on edits to config/dood.yaml.

    `lines_per_record` sets `defaults.log_lines_per_record`; None keeps the project's default (100).
    """
    runs_root = workdir / "dood-runs"
    runs_root.mkdir(parents=True, exist_ok=True)
    path = workdir / "dood.yaml"
    text = _CONFIG_YAML.format(url=DOCKER_URL, runs_root=runs_root)
    if lines_per_record is not None:
        text += f"  log_lines_per_record: {lines_per_record}\n"
    path.write_text(text, encoding="utf-8")
    os.environ["DOOD_CONFIG"] = str(path)
    return path


def configure_task_logging(log_path: Path):
    """Send operator logs where a task's logs go in Airflow 3: Airflow's own structlog setup, JSON lines.

    The task runner does exactly this with the supervisor's log socket
    (``configure_logging(json_output=True, output=os.fdopen(fd, "wb", buffering=0), sending_to_supervisor=True)``,
    airflow/sdk/execution_time/supervisor.py); here the unbuffered stream is a file instead of the socket.
    Both ``self.log`` (structlog) and stdlib ``logging`` end up in that file.
    """
    from airflow.sdk.log import configure_logging

    stream = open(log_path, "wb", buffering=0)
    configure_logging(json_output=True, output=stream, sending_to_supervisor=True)
    return stream


def stub_context(run_id: str, task_id: str) -> dict[str, Any]:
    """The few context keys the operators read (TaskIdentity.from_context and naming.run_env)."""
    ti = SimpleNamespace(dag_id="bench", task_id=task_id, run_id=run_id, map_index=-1, try_number=1)
    return {
        "ti": ti,
        "task_instance": ti,
        "run_id": run_id,
        "logical_date": None,
        "data_interval_start": None,
        "data_interval_end": None,
    }


def new_run_id() -> str:
    return f"bench__{uuid.uuid4().hex}"


def run_operator(operator, context: dict[str, Any]) -> Any:
    """Call execute() the way the task runner does: with ExecutorSafeguard's tracker set to the task."""
    from airflow.sdk.bases.operator import ExecutorSafeguard

    ctx = contextvars.copy_context()
    ctx.run(ExecutorSafeguard.tracker.set, operator)
    return ctx.run(operator.execute, context)


def make_dood(command: list[str], task_id: str):
    from dood.operators.container import DoodContainerOperator

    return DoodContainerOperator(task_id=task_id, image=IMAGE, command=command)


def make_docker(command: list[str], task_id: str):
    from airflow.providers.docker.operators.docker import DockerOperator

    return DockerOperator(
        task_id=task_id,
        image=IMAGE,
        command=command,
        docker_url=DOCKER_URL,
        auto_remove="force",
        mount_tmp_dir=False,
        xcom_all=False,
        do_xcom_push=False,
    )


def run_raw(command: list[str], sink=None) -> int:
    """The docker SDK floor: create, start, follow logs, wait, remove. Returns the number of lines seen.

    With a sink (binary file), the output chunks are written to it, as a forwarder would.
    """
    import docker

    api = docker.APIClient(base_url=DOCKER_URL, version="auto")
    try:
        container = api.create_container(image=IMAGE, command=command, name=f"bench-raw-{uuid.uuid4().hex[:12]}")
        cid = container["Id"]
        lines = 0
        try:
            api.start(cid)
            stream = api.logs(cid, stream=True, follow=True, stdout=True, stderr=True)
            try:
                for chunk in stream:
                    lines += chunk.count(b"\n")
                    if sink is not None:
                        sink.write(chunk)
            finally:
                stream.close()
            status = api.wait(cid)["StatusCode"]
            if status != 0:
                raise RuntimeError(f"raw container exited with {status}")
        finally:
            api.remove_container(cid, force=True, v=True)
        return lines
    finally:
        api.close()


def run_variant(variant: str, command: list[str], tag: str) -> None:
    """One full run of one variant (create -> remove)."""
    if variant == "raw":
        run_raw(command)
    elif variant == "dood":
        run_operator(make_dood(command, f"dood_{tag}"), stub_context(new_run_id(), f"dood_{tag}"))
    elif variant == "docker":
        run_operator(make_docker(command, f"docker_{tag}"), stub_context(new_run_id(), f"docker_{tag}"))
    else:
        raise ValueError(variant)


def code_state() -> str:
    """The commit of the repository and whether src/dood differs from it (recorded with results)."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src/dood"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"commit {head}" + (" plus uncommitted changes in src/dood" if dirty else "")


def code_span(before: str) -> str:
    """code_state() of a benchmark that started at `before`: the repository may move on while it runs."""
    after = code_state()
    return before if after == before else f"{before} at the start, {after} at the end"


def peak_rss_mib() -> float:
    """ru_maxrss of this process (Linux: KiB) in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
