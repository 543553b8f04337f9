"""Test-wide setup: an isolated Airflow home and dood config, set before anything imports Airflow."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_home = Path(tempfile.mkdtemp(prefix="dood-test-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_home)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "tests" / "integration" / "dags")
os.environ["DOOD_TEST_ROOT"] = str(_home)
_config = _home / "dood.yaml"
_config.write_text(f"runs_root: {_home / 'runs'}\npolicy:\n  allowed_host_roots: ['{_home}']\n")
os.environ["DOOD_CONFIG"] = str(_config)

# --- Two phases for `DOOD_TEST_WORKERS=2 make test` (pytest-xdist, --dist loadgroup) ---------------------------
# Every worker is its own process: its own Airflow home and metadata DB (above), its own second engines (named by
# pid: second_engine.py), its own tmp_path tree. What they share is the main engine. So:
# - `serial` tests run in a second, single-process phase (`-m serial`): they change or read engine-global state.
# - The tests that make `dood_it*` containers on the main engine (the `ours` fixture removes every one of them)
#   form one group, run in order on one worker; a file listed in INDEPENDENT is a group of its own (its module
#   stack starts once) that may run beside them; a unit test goes anywhere. A new file is in the main group
#   unless listed here. (The groups are this file's scheduler below, not xdist's `xdist_group` marks, which
#   pytest-xdist 3.8 can no longer apply to node ids under pytest 9.2.)
SERIAL = {
    "integration/test_proxy_fuzz.py": "floods the engine's event buffer (256 events) and counts its volumes",
}
INDEPENDENT = {  # no dood_it* container on the main engine; each its own DAG ids, stack home or second engine
    "integration/test_daemon_restart.py",  # restarts its own second engine (second_engine.py), not the main one
    "integration/test_userns.py",  # its own engines with --userns-remap; the only tests that use dockremap
    "integration/test_kill_paths.py",
    "integration/test_resume_paths.py",
    "integration/test_handoff.py",
    "integration/test_backfill_bound.py",
    "integration/test_checkpoints.py",
    "integration/test_gpu_scheduler.py",
    "integration/test_hosts_celery.py",
    "integration/test_gpus.py",
    "integration/test_gpu_discovery.py",
    "integration/test_gpu_engine.py",
    "integration/test_proxy_gpu_claims.py",
    "integration/test_proxy_identity.py",
    "integration/test_proxy_listeners.py",
    "integration/test_pipeline_isolation.py",
    "ui/test_pages.py",
    "integration/test_assets.py",
    "ui/test_assets_view.py",
    "integration/test_demo.py",
}
MAIN_ENGINE_FIXTURES = {"ours", "container", "dag_run"}  # these make or remove dood_it* containers


def engine_group(nodeid: str) -> str:
    """Which tests run in order on one worker: a unit test alone, an INDEPENDENT file, else the main group."""
    path = nodeid.split("::")[0].removeprefix("tests/")
    if path.startswith("unit/"):
        return nodeid
    return path if path in INDEPENDENT else "main-engine"


@pytest.hookimpl(tryfirst=True)  # before xdist's and the mark plugin's (-m serial) hooks
def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(item.fspath)).relative_to(REPO / "tests").as_posix()
        if path in SERIAL or any(f"{path}::{item.name}".startswith(key) for key in SERIAL if "::" in key):
            item.add_marker(pytest.mark.serial)
        elif path in INDEPENDENT and MAIN_ENGINE_FIXTURES & set(item.fixturenames):
            raise pytest.UsageError(
                f"{item.nodeid} uses {sorted(MAIN_ENGINE_FIXTURES & set(item.fixturenames))}, which make or remove "
                f"dood_it* containers on the main engine: take {path} out of INDEPENDENT in tests/conftest.py"
            )


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist's
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadgroup`: xdist's load-scope scheduler over engine_group (largest group first)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class EngineGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return engine_group(nodeid)

    return EngineGroups(config, log)


def pytest_sessionstart(session):
    """Under xdist, the controller removes an interrupted earlier session's stack containers once, before the
    workers start (their stacks then remove only their own: airflow_stack.remove_stack_containers)."""
    if not hasattr(session.config, "workerinput") and session.config.getoption("numprocesses", None):
        _remove_leftover_stack_containers()


def pytest_collection_finish(session):
    """Without xdist, the same once collected, when the session runs tests that start stacks (never for the
    unit tests alone: `make check` beside a running suite must not touch its containers)."""
    if session.config.getoption("numprocesses", None) or hasattr(session.config, "workerinput"):
        return
    if any(str(item.nodeid).startswith(("tests/integration/", "tests/ui/")) for item in session.items):
        _remove_leftover_stack_containers()


def _remove_leftover_stack_containers() -> None:
    import docker

    try:
        api = docker.APIClient(base_url="unix:///var/run/docker.sock")
        for container in api.containers(all=True, filters={"label": "dood.managed=true"}):
            if container["Labels"].get("dood.dag_id", "").startswith(("dood_sched_", "dood_ui")):
                api.remove_container(container["Id"], force=True)
    except docker.errors.DockerException:
        pass  # no engine: the tests that need one say so
