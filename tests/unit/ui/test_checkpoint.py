"""The Container tab's checkpoint: the host path the container mounts at /dood/checkpoint (or the XCom's once it
is gone), what it holds where the api-server sees it, and an honest note where it does not."""

from __future__ import annotations

import os

from dood.config.endpoints import MountMapEntry
from dood.mounts.checkpoints import CheckpointKey, checkpoint_path
from dood.ui.checkpoint import checkpoint_view, host_path_of, local_path, looks_like_checkpoint

KEY = CheckpointKey(stack="dood", dag_id="dood_ml", task_id="train", run_id="manual__2026-01-01", first_try=1)


def _made(root, files: dict[str, bytes]) -> str:
    path = checkpoint_path(str(root / "dood-checkpoints"), KEY)
    os.makedirs(path)
    for name, data in files.items():
        os.makedirs(os.path.dirname(os.path.join(path, name)), exist_ok=True)
        with open(os.path.join(path, name), "wb") as out:
            out.write(data)
    return path


def test_the_host_path_is_the_mount_at_dood_checkpoint():
    inspected = {
        "Mounts": [
            {"Source": "/srv/data", "Destination": "/data", "Type": "bind"},
            {"Source": "/srv/runs/dood-checkpoints/dood/t/run-x", "Destination": "/dood/checkpoint", "Type": "bind"},
        ]
    }
    assert host_path_of(inspected) == "/srv/runs/dood-checkpoints/dood/t/run-x"
    assert host_path_of({"Mounts": [{"Source": "/srv/data", "Destination": "/data"}]}) is None
    assert host_path_of(None) is None and host_path_of({"Mounts": None}) is None


def test_only_a_checkpoint_shaped_path_is_read():
    assert looks_like_checkpoint(checkpoint_path("/srv/runs/dood-checkpoints", KEY))
    for path in (
        "/etc",
        "/root/.ssh/run-keys",
        "/srv/dood-checkpoints/../../etc/x/run-y",
        "srv/dood-checkpoints/s/t/run-x",
        "/srv/other/s/t/run-x",
        "/srv/dood-checkpoints/s/t/done-1-run-x",
    ):
        assert not looks_like_checkpoint(path), path
    assert "not shaped like" in (checkpoint_view("/etc", []).note or "")


def test_the_mount_map_turns_a_host_path_into_the_api_servers():
    entries = [
        MountMapEntry(airflow_path="/opt/data", host_path="/srv"),
        MountMapEntry(airflow_path="/opt/runs", host_path="/srv/runs"),
    ]
    assert local_path("/srv/runs/dood-checkpoints/a", entries) == "/opt/runs/dood-checkpoints/a"  # longest first
    assert local_path("/srv/x", entries) == "/opt/data/x"
    assert local_path("/srv", entries) == "/opt/data"
    assert local_path("/srvx/y", entries) == "/srvx/y"  # not under /srv: the path itself (Airflow on the host)


def test_what_it_holds_files_bytes_last_modified_and_newest(tmp_path):
    path = _made(tmp_path, {"epoch-1.pkl": b"x" * 100, "state/epoch-2.pkl": b"y" * 50})
    os.utime(os.path.join(path, "epoch-1.pkl"), (1_800_000_000, 1_800_000_000))
    os.utime(os.path.join(path, "state/epoch-2.pkl"), (1_800_000_100, 1_800_000_100))
    view = checkpoint_view(path, [])
    assert view.host_path == path and view.note is None
    assert view.contents is not None
    assert (view.contents.files, view.contents.bytes) == (2, 150)
    assert view.contents.newest[0] == "state/epoch-2.pkl"
    assert view.contents.last_modified is not None and view.contents.last_modified >= 1_800_000_100


def test_seen_through_the_mount_map(tmp_path):
    path = _made(tmp_path / "airflow-side", {"a": b"1"})
    host = path.replace(str(tmp_path / "airflow-side"), "/srv/ml")
    view = checkpoint_view(host, [MountMapEntry(airflow_path=str(tmp_path / "airflow-side"), host_path="/srv/ml")])
    assert view.host_path == host and view.contents is not None and view.contents.files == 1


def test_a_directory_the_api_server_does_not_see_is_said_so(tmp_path):
    view = checkpoint_view(checkpoint_path(str(tmp_path / "nowhere" / "dood-checkpoints"), KEY), [])
    assert view.contents is None and view.note.startswith("not visible from the api-server")


def test_a_link_is_not_followed(tmp_path):
    target = tmp_path / "secret"
    target.mkdir()
    (target / "id_rsa").write_text("k")
    path = checkpoint_path(str(tmp_path / "dood-checkpoints"), KEY)
    os.makedirs(os.path.dirname(path))
    os.symlink(target, path)
    view = checkpoint_view(path, [])
    assert view.contents is None and "link" in view.note


def test_an_unreadable_directory_is_said_so(tmp_path, monkeypatch):
    """A checkpoint is a 2770 leaf of the steps' group: the api-server's user may not list it (as root here,
    the refusal is the kernel's answer made up: scandir raises PermissionError)."""
    path = _made(tmp_path, {"a": b"1"})

    def refused(where):
        raise PermissionError(13, "Permission denied", where)

    monkeypatch.setattr(os, "scandir", refused)
    view = checkpoint_view(path, [])
    assert view.contents is None and view.note.startswith("not readable by the api-server's user")


def test_the_operator_pushes_the_xcom_key_the_tab_reads():
    from dood.lifecycle.checkpoint import CHECKPOINT_XCOM_KEY
    from dood.ui.checkpoint import XCOM_KEY

    assert CHECKPOINT_XCOM_KEY == XCOM_KEY
