from __future__ import annotations

import pytest

from dood.config.model import DoodConfig, load_config, parse_config
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


# --- one loader, one section; which file is in force is explicit and logged ---


def test_one_section_is_loaded_and_validated_alone(tmp_path):
    path = tmp_path / "dood.yaml"
    path.write_text("runs_root: /srv/runs\npolicy:\n  allowed_images: ['dood-*:*']\n  max_memory: 1g\n")
    policy = load_config(path, section="policy")
    assert policy == load_config(path).policy and policy.max_memory == 1024**3
    path.write_text("runs_root: relative/is/invalid\npolicy:\n  allow_gpus: true\n")
    assert load_config(path, section="policy").allow_gpus is True  # other sections are not validated
    path.write_text("runs_root: /srv/runs\n")
    assert load_config(path, section="policy") == DoodConfig().policy
    with pytest.raises(DoodConfigError, match=r"policy\.max_memory"):
        parse_config({"max_memory": "lots"}, "x.yaml", section="policy")
    with pytest.raises(DoodConfigError, match="no section 'polcy'"):
        load_config(path, section="polcy")


def _fresh_lookup(monkeypatch, cwd):
    import dood.config.file

    monkeypatch.delenv("DOOD_CONFIG", raising=False)
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(dood.config.file, "_announced", set())


def test_without_any_config_file_the_defaults_apply_and_the_log_says_so_once(tmp_path, monkeypatch, caplog):
    _fresh_lookup(monkeypatch, tmp_path)
    with caplog.at_level("INFO", logger="dood.config.file"):
        assert load_config() == DoodConfig()
        assert load_config() == DoodConfig()
    said = [r for r in caplog.records if r.name == "dood.config.file"]
    assert [r.levelname for r in said] == ["WARNING"]
    assert "No dood config file: defaults" in said[0].getMessage() and str(tmp_path) in said[0].getMessage()


def test_the_default_file_is_config_dood_yaml_in_the_working_directory(tmp_path, monkeypatch, caplog):
    _fresh_lookup(monkeypatch, tmp_path)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "dood.yaml").write_text("runs_root: /srv/from-cwd\n")
    with caplog.at_level("INFO", logger="dood.config.file"):
        assert load_config().runs_root == "/srv/from-cwd"
        load_config()
    said = [r.getMessage() for r in caplog.records if r.name == "dood.config.file"]
    assert said == [f"dood config file: {tmp_path / 'config' / 'dood.yaml'}"]


def test_a_config_that_is_not_a_mapping_is_refused(tmp_path):
    path = tmp_path / "dood.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(DoodConfigError, match="expected a mapping at the top"):
        load_config(path)
