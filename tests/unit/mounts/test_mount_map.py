from __future__ import annotations

import os

import pytest

from dood.config.endpoints import MountMapEntry
from dood.exceptions import BindSourceMissing, DoodConfigError, MountMapConflict, MountNotMapped
from dood.mounts.mount_map import (
    DoodMount,
    MountMap,
    check_bind_sources,
    discovered_entries,
    host_mounts,
    mount_map_in_force,
    reconcile,
)


def entry(a, h):
    return MountMapEntry(airflow_path=a, host_path=h)


@pytest.fixture
def mapping(tmp_path):
    (tmp_path / "data" / "models").mkdir(parents=True)
    return tmp_path, MountMap(
        [entry(str(tmp_path / "data"), "/srv/data"), entry(str(tmp_path / "data" / "models"), "/fast/models")],
        identity=False,
    )


def test_longest_prefix_wins(mapping):
    root, mm = mapping
    assert mm.to_host(str(root / "data" / "x.csv")) == "/srv/data/x.csv"
    assert mm.to_host(str(root / "data" / "models" / "m1")) == "/fast/models/m1"
    assert mm.to_host(str(root / "data")) == "/srv/data"


def test_prefix_matches_whole_components_only(mapping):
    root, mm = mapping
    with pytest.raises(MountNotMapped):
        mm.to_host(str(root / "database"))


def test_dotdot_is_resolved_before_mapping(mapping):
    root, mm = mapping
    with pytest.raises(MountNotMapped):
        mm.to_host(str(root / "data" / ".." / "etc"))
    assert mm.to_host(str(root / "data" / "models" / ".." / "y")) == "/srv/data/y"


def test_symlinks_are_resolved_on_the_airflow_side(mapping):
    root, mm = mapping
    os.symlink(root / "data" / "models", root / "shortcut")
    assert mm.to_host(str(root / "shortcut" / "m2")) == "/fast/models/m2"


def test_unmapped_path_lists_known_entries(mapping):
    root, mm = mapping
    with pytest.raises(MountNotMapped) as err:
        mm.to_host("/etc/passwd", "mounts[0]")
    text = str(err.value)
    assert "mounts[0]" in text and "/srv/data" in text and "/fast/models" in text and "mount_map" in text


def test_identity_map_on_the_host(tmp_path):
    assert MountMap([], identity=True).to_host(str(tmp_path / "a")) == os.path.realpath(tmp_path / "a")


def test_relative_source_is_refused():
    with pytest.raises(DoodConfigError, match="absolute"):
        MountMap([], identity=True).to_host("data/x")


def test_discovery_reads_binds_and_volumes():
    inspect = {
        "Mounts": [
            {"Type": "bind", "Source": "/srv/ml", "Destination": "/opt/dood/data"},
            {"Type": "volume", "Source": "/var/lib/docker/volumes/v/_data", "Destination": "/cache"},
            {"Type": "tmpfs", "Destination": "/tmp"},
        ]
    }
    assert discovered_entries(inspect) == [
        entry("/opt/dood/data", "/srv/ml"),
        entry("/cache", "/var/lib/docker/volumes/v/_data"),
    ]


def test_reconcile_accepts_agreeing_config():
    merged = reconcile([entry("/opt/dood/data/sub", "/srv/ml/sub")], [entry("/opt/dood/data", "/srv/ml")])
    assert entry("/opt/dood/data", "/srv/ml") in merged


def test_reconcile_shows_both_sides_of_a_disagreement():
    with pytest.raises(MountMapConflict) as err:
        reconcile([entry("/opt/dood/data", "/wrong")], [entry("/opt/dood/data", "/srv/ml")])
    assert "/wrong" in str(err.value) and "/srv/ml" in str(err.value)


def test_reconcile_flags_config_for_a_path_that_is_not_mounted():
    with pytest.raises(MountMapConflict, match="not a mount"):
        reconcile([entry("/elsewhere", "/srv/x")], [entry("/opt/dood/data", "/srv/ml")])


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("/a:/b", DoodMount(source="/a", target="/b")),
        ("/a:/b:ro", DoodMount(source="/a", target="/b", read_only=True)),
        ("cache:/c", DoodMount(source="cache", target="/c", type="volume")),
        ({"source": "/a", "target": "/b", "read_only": True}, DoodMount(source="/a", target="/b", read_only=True)),
    ],
)
def test_mount_forms(spec, expected):
    assert DoodMount.parse(spec, "mounts[0]") == expected


@pytest.mark.parametrize("spec", ["/a", "/a:/b:rx", {"source": "/a", "target": "rel"}, {"src": "/a"}])
def test_bad_mount_names_the_field(spec):
    with pytest.raises(DoodConfigError, match=r"mounts\[0\]"):
        DoodMount.parse(spec, "mounts[0]")


def _never_asked():
    raise AssertionError("mode off never inspects our own container")


def test_mount_discovery_modes_decide_the_map_in_force():
    configured = [MountMapEntry(airflow_path="/opt/dood", host_path="/srv/dood")]
    own = {"Mounts": [{"Type": "bind", "Source": "/srv/dood", "Destination": "/opt/dood"}]}
    assert mount_map_in_force([], "off", _never_asked, list).identity is True
    off = mount_map_in_force(configured, "off", _never_asked, list)
    assert off.identity is False and off.to_host("/opt/dood/x") == "/srv/dood/x"
    on_host = mount_map_in_force(configured, "auto", lambda: None, list)
    assert on_host.identity is True and on_host.to_host("/elsewhere") == "/elsewhere"
    found = mount_map_in_force(configured, "required", lambda: own, list)
    assert found.identity is False
    with pytest.raises(DoodConfigError, match=r"'required' but .* \(tried \['abc'\]\).*'auto'"):
        mount_map_in_force(configured, "required", lambda: None, lambda: ["abc"])


def test_host_mounts_translate_binds_keep_volumes_and_refuse_the_run_dir():
    mount_map = MountMap([MountMapEntry(airflow_path="/opt/dood", host_path="/srv/dood")], identity=False)
    mounts = host_mounts(["/opt/dood/data:/data:ro", "cache:/cache"], mount_map, "train", reserved="/dood/run")
    assert [(m["Source"], m["Target"], m["Type"], m["ReadOnly"]) for m in mounts] == [
        ("/srv/dood/data", "/data", "bind", True),
        ("cache", "/cache", "volume", False),
    ]
    with pytest.raises(DoodConfigError, match=r"train: mounts\[1\]: /dood/run is reserved"):
        host_mounts(["cache:/cache", "/opt/dood/x:/dood/run"], mount_map, "train", reserved="/dood/run")
    with pytest.raises(MountNotMapped, match=r"train: mounts\[0\]"):
        host_mounts(["/etc:/etc"], mount_map, "train", reserved="/dood/run")


# --- a bind source that does not exist: refused by dood, where it can see the source ---


def test_a_missing_bind_source_is_refused_naming_the_mount_and_the_fix(tmp_path):
    (tmp_path / "here").mkdir()
    identity = MountMap([], identity=True)
    missing = str(tmp_path / "not-there")
    mounts = [f"{tmp_path / 'here'}:/here", "cache:/cache", f"{missing}:/data:ro"]
    with pytest.raises(BindSourceMissing) as caught:
        check_bind_sources(mounts, identity, "train")
    message = str(caught.value)
    assert isinstance(caught.value, DoodConfigError)
    assert message.startswith(f"train: mounts[2]: the bind source of mount '{missing}:/data:ro' does not exist")
    assert f"`mkdir -p {missing}`" in message and "Nothing was created" in message and "`mounts`" in message
    check_bind_sources(mounts[:2], identity, "train")  # an existing bind and a volume pass


def test_a_missing_source_under_a_mapped_directory_names_its_host_path(mapping):
    root, mm = mapping
    with pytest.raises(BindSourceMissing) as caught:
        check_bind_sources([{"source": str(root / "data" / "gone"), "target": "/in", "read_only": True}], mm, "t")
    assert caught.value.host_path == "/srv/data/gone"
    assert f"{root / 'data' / 'gone'}:/in:ro" in str(caught.value) and "(on the Docker host: '/srv/data/gone')" in str(
        caught.value
    )


def test_a_source_this_process_cannot_see_is_left_to_docker(tmp_path, monkeypatch):
    unseen = MountMap([entry("/opt/not-mounted-here", "/srv/x")], identity=False)  # its Airflow side is absent
    assert unseen.local_view("/opt/not-mounted-here/data") is None
    check_bind_sources(["/opt/not-mounted-here/data:/data"], unseen, "t")
    assert MountMap([], identity=False).local_view(str(tmp_path)) is None  # uncovered, not on the host

    def no_permission(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr("dood.mounts.mount_map.os.stat", no_permission)  # may not look: Docker (or the proxy) judges
    check_bind_sources([f"{tmp_path / 'private'}:/p"], MountMap([], identity=True), "t")
