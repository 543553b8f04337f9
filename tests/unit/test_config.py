from __future__ import annotations

import pytest

from dood.config import DoodConfig, load_config, parse_config
from dood.exceptions import DoodConfigError


def test_repository_config_is_valid():
    assert isinstance(load_config(), DoodConfig)


def test_bad_enum_names_field_path_and_allowed_values():
    with pytest.raises(DoodConfigError) as err:
        parse_config({"defaults": {"auto_remove": "sometimes"}})
    text = str(err.value)
    assert "defaults.auto_remove" in text
    assert "'always'" in text and "'on_success'" in text and "'never'" in text


def test_unknown_key_is_refused_with_its_path():
    with pytest.raises(DoodConfigError, match=r"docker\.urll"):
        parse_config({"docker": {"urll": "x"}})


def test_relative_mount_map_path_is_refused():
    with pytest.raises(DoodConfigError, match=r"mount_map\.0\.host_path.*absolute"):
        parse_config({"mount_map": [{"airflow_path": "/a", "host_path": "srv/a"}]})


def test_bad_memory_size_names_the_field():
    with pytest.raises(DoodConfigError, match=r"defaults\.resources\.memory"):
        parse_config({"defaults": {"resources": {"memory": "lots"}}})


def test_env_var_overrides_path(tmp_path, monkeypatch):
    path = tmp_path / "dood.yaml"
    path.write_text("runs_root: /srv/runs\n")
    monkeypatch.setenv("DOOD_CONFIG", str(path))
    assert load_config().runs_root == "/srv/runs"


def test_missing_explicit_config_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DOOD_CONFIG", str(tmp_path / "absent.yaml"))
    with pytest.raises(DoodConfigError, match="DOOD_CONFIG"):
        load_config()


def test_invalid_yaml_is_reported(tmp_path):
    path = tmp_path / "dood.yaml"
    path.write_text("docker: [unclosed\n")
    with pytest.raises(DoodConfigError, match="not valid YAML"):
        load_config(path)


def test_unquoted_yaml_off_means_mount_discovery_off(tmp_path):
    path = tmp_path / "dood.yaml"
    path.write_text("mount_discovery:\n  mode: off\n")  # YAML 1.1 reads this as False
    assert load_config(path).mount_discovery.mode == "off"


def test_mount_discovery_true_is_refused_with_the_choices(tmp_path):
    with pytest.raises(DoodConfigError, match="mount_discovery.mode"):
        parse_config({"mount_discovery": {"mode": True}})
