"""The two-host compose files as docker-compose reads them (`config`: no engine needed): optional settings are
optional, required ones are named when missing, and the certificate directories are read as paths."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MAIN = ["-f", "docker-compose.yml", "-f", "docker-compose.hosts-main.yml", "--profile", "celery"]
HOST = ["-f", "docker-compose.host.yml"]
MAIN_ENV = {
    "DOOD_HOST_ROOT": "/srv/dood",
    "DOOD_LOG_ROOT": "/srv/dood-logs",
    "DOCKER_GID": "999",
    "DOOD_MAIN_ADDRESS": "10.0.0.10",
    "DOOD_CERTS": "./var/certs",
}
HOST_ENV = {
    "DOOD_HOST": "gpu-b",
    "DOOD_STACK": "main",
    "DOOD_MAIN_ADDRESS": "10.0.0.10",
    "DOOD_HOST_ROOT": "/mnt/nfs/dood",
    "DOOD_LOG_ROOT": "/mnt/nfs/dood-logs",
    "DOCKER_GID": "999",
    "DOOD_CERTS": "/etc/dood/certs",
    "DOOD_SECRETS": "/etc/dood/secrets",
}

pytestmark = pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (v1) is not installed")


def config(files: list[str], env: dict[str, str], tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    """`docker-compose config` with only `env` (an empty env file: the checkout's .env is not read)."""
    empty = tmp_path / "empty.env"
    empty.write_text("")
    return subprocess.run(
        ["docker-compose", "--env-file", str(empty), *files, *extra, "config"],
        cwd=REPO,
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def volumes(rendered: str, service: str) -> list[str]:
    return yaml.safe_load(rendered)["services"][service].get("volumes", [])


def test_main_file_needs_no_ui_certs(tmp_path):
    done = config(MAIN, MAIN_ENV, tmp_path)
    assert done.returncode == 0, done.stderr
    ui = [v for v in volumes(done.stdout, "airflow-apiserver") if v.endswith(":/opt/airflow/ui-certs:ro")]
    assert ui == [f"{REPO}/var/ui-certs-unset/client:/opt/airflow/ui-certs:ro"], ui


def test_main_file_names_a_missing_dood_certs(tmp_path):
    env = {k: v for k, v in MAIN_ENV.items() if k != "DOOD_CERTS"}
    done = config(MAIN, env, tmp_path)
    assert done.returncode != 0 and "set DOOD_CERTS" in done.stderr, done.stderr


def test_relative_dood_certs_with_dot_slash_is_a_path(tmp_path):
    done = config(MAIN, MAIN_ENV, tmp_path)
    assert f"{REPO}/var/certs/client:/opt/airflow/certs:ro" in volumes(done.stdout, "airflow-triggerer")


@pytest.mark.parametrize("profile", [[], ["--profile", "ui"]])
def test_host_file_needs_no_ui_certs(tmp_path, profile):
    """Not even for the unused `ui` profile's service, which docker-compose 1.29 interpolates too."""
    done = config(HOST, HOST_ENV, tmp_path, *profile)
    assert done.returncode == 0, done.stderr
    proxy = volumes(done.stdout, "dood-proxy")
    assert "/etc/dood/certs/gpu-b:/certs:ro" in proxy, proxy


def test_host_file_mounts_the_socket_it_is_given(tmp_path):
    done = config(HOST, {**HOST_ENV, "DOOD_DOCKER_SOCKET": "/run/b/docker.sock"}, tmp_path)
    assert "/run/b/docker.sock:/var/run/docker.sock:rw" in volumes(done.stdout, "dood-proxy")
