"""Clear errors before anything is created, on the real engine through `dag.test()`: an image that is not on
the Docker host and cannot be pulled (no registry is reachable here: Docker's raw answer is a 500 from
images/create, "lookup registry-1.docker.io: no such host"), and a bind source that does not exist (Docker's
own refusal would come only at create, after dood made the run directory). DAGs: dags/dood_it_clear_errors.py.

Each test checks that nothing was created: no container of the DAG (`docker ps -a`, by its dood labels and
by its name), and no run directory under runs_root.
"""

from __future__ import annotations

import pytest

from tests.integration.conftest import task_state


@pytest.fixture
def clear_errors():
    """The DAG module, with its config written: runs_root under its ROOT, so a run directory made too early
    would show there."""
    import dood_it_clear_errors as module

    module.ROOT.mkdir(parents=True, exist_ok=True)
    (module.ROOT / "dood.yaml").write_text(
        f"runs_root: {module.ROOT / 'runs'}\npolicy:\n  allowed_host_roots: ['{module.ROOT}']\n"
    )
    return module


def assert_nothing_created(dag_id: str, ours, docker_api, root) -> None:
    assert ours(dag_id) == [], f"containers of {dag_id} were created: {ours(dag_id)}"
    readable = dag_id.replace("_", "-")
    named = [c["Names"] for c in docker_api.containers(all=True) if readable in "".join(c["Names"])]
    assert named == [], f"containers named after {dag_id} exist: {named}"
    runs = root / "runs"
    assert not runs.exists() or list(runs.iterdir()) == [], f"run directories were made: {list(runs.iterdir())}"


def test_a_missing_image_fails_with_doods_message_and_creates_nothing(
    airflow_db, docker_api, ours, next_date, clear_errors, capfd
):
    image = clear_errors.MISSING_IMAGE
    with pytest.raises(Exception, match="No such image"):
        docker_api.inspect_image(image)
    dagrun = clear_errors.DAGS["dood_it_missing_image"].test(logical_date=next_date, run_after=next_date)
    log = capfd.readouterr().out
    assert dagrun.state == "failed" and task_state(dagrun) == "failed"
    assert "ImageUnavailable" in log, log[-3000:]
    assert f"image: '{image}' is not on the Docker host and pulling it failed" in log
    assert f"`docker build -t {image}" in log and "`docker.conn_id`" in log and "Nothing was created" in log
    assert "500 Server Error" not in log  # Docker's cause is told, not its raw HTTP error
    assert_nothing_created("dood_it_missing_image", ours, docker_api, clear_errors.ROOT)


def test_a_missing_bind_source_fails_with_doods_message_and_creates_nothing(
    airflow_db, docker_api, ours, next_date, clear_errors, capfd
):
    missing = clear_errors.MISSING_SOURCE
    assert not missing.exists()
    dagrun = clear_errors.DAGS["dood_it_missing_source"].test(logical_date=next_date, run_after=next_date)
    log = capfd.readouterr().out
    assert dagrun.state == "failed" and task_state(dagrun) == "failed"
    assert "BindSourceMissing" in log, log[-3000:]
    assert f"run: mounts[0]: the bind source of mount '{missing}:/data:ro' does not exist" in log
    assert f"`mkdir -p {missing}`" in log and "Nothing was created" in log
    assert "bind source path does not exist" not in log  # dood's refusal, before Docker's own
    assert_nothing_created("dood_it_missing_source", ours, docker_api, clear_errors.ROOT)
    assert not missing.exists()  # and dood did not make it either
