"""The engine's socket is a setting of the compose stack (DOOD_DOCKER_SOCKET), and its group comes from it.

A second Docker engine of the test's own, its socket at another path (/run/dood-sock-<pid>/docker.sock) and
owned by a group no other socket has: `scripts/compose-setup.sh` with `DOOD_DOCKER_SOCKET` set writes that
path and that group into the env file, and the two proxies brought up by `docker-compose.yml` (project
`dood-sock`) reach that engine, not the main one: `/info` through each proxy answers the second engine's
data root (engines on one machine share their `ID`), and the read-only proxy's container list shows the
container made there. Only the two proxy services are brought up (they depend on nothing): the setting is
theirs alone.

Runs under `flock /tmp/dood-compose.lock` like every compose test (DOOD_E2E=1 or -m e2e).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import docker
import pytest

from tests.e2e.conftest import REPO, STATE, compose_command, read_env_file, run_script, wait_for
from tests.integration.second_engine import SecondEngine
from tests.ports import free_port

PROJECT = "dood-sock"
SOCKET_GID = 23751  # a group no socket on this machine has: the proxies reach the engine only with this one
BUSYBOX = "dood-test-busybox:latest"


def _proxy_get(container, port: int, path: str):
    """GET through the proxy, from inside its own container (it publishes nothing)."""
    code = (
        "import urllib.request as u, sys; "
        f"sys.stdout.write(u.urlopen('http://127.0.0.1:{port}{path}', timeout=10).read().decode())"
    )
    exit_code, output = container.exec_run(["python", "-c", code])
    assert exit_code == 0, f"GET {path} through the proxy on :{port} failed: {output.decode(errors='replace')}"
    return json.loads(output)


@pytest.fixture
def second_engine():
    if os.geteuid() != 0:
        pytest.skip("starting a second dockerd needs root")
    engine = SecondEngine.for_session(role="sock", subnet=218)
    engine.start()
    try:
        os.chown(engine.socket, 0, SOCKET_GID)
        os.chmod(engine.socket, 0o660)
        engine.load_image(BUSYBOX)
        yield engine
    finally:
        engine.stop()


def test_proxies_reach_the_engine_of_dood_docker_socket(second_engine, tmp_path):
    # Engines on one machine share /etc/docker/key.json, hence their `ID`: the data root tells them apart.
    main_root = docker.from_env().info()["DockerRootDir"]
    second_root = second_engine.api().info()["DockerRootDir"]
    assert main_root != second_root, "the second engine must be another engine"

    root = STATE / f"sock-{os.getpid()}"
    host_root = root / "dood"
    host_root.mkdir(parents=True, exist_ok=True)
    env_file = root / "compose.env"
    env_file.write_text(f"DOOD_HOST_ROOT={host_root}\nAIRFLOW_API_PORT={free_port()}\nDOOD_STACK={PROJECT}\n")
    shell = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_GID", "DOOD_DOCKER_SOCKET")}
    compose = [*compose_command(), "-p", PROJECT, "-f", str(REPO / "docker-compose.yml"), "--env-file", str(env_file)]
    client = docker.from_env()
    try:
        # The quickstart's step, with the setting: the group is read from *that* socket.
        run_script(
            "compose-setup.sh", env={"DOOD_ENV_FILE": str(env_file), "DOOD_DOCKER_SOCKET": str(second_engine.socket)}
        )
        settings = read_env_file(env_file)
        assert settings["DOOD_DOCKER_SOCKET"] == str(second_engine.socket), settings
        assert settings["DOCKER_GID"] == str(SOCKET_GID), (
            f"DOCKER_GID must be the group of {second_engine.socket} ({SOCKET_GID}), "
            f"not {settings['DOCKER_GID']} (that of /var/run/docker.sock is {os.stat('/var/run/docker.sock').st_gid})"
        )

        env = {k: v for k, v in shell.items() if k not in settings}
        up = subprocess.run(
            [*compose, "up", "-d", "dood-proxy", "dood-proxy-ro"], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert up.returncode == 0, f"compose up of the proxies failed:\n{up.stdout}\n{up.stderr}"

        def proxies():
            found = client.containers.list(filters={"label": f"com.docker.compose.project={PROJECT}"})
            return {c.labels["com.docker.compose.service"]: c for c in found}

        def healthy():
            found = proxies()
            states = {s: (c.attrs["State"].get("Health") or {}).get("Status") for s, c in found.items()}
            return found if states == {"dood-proxy": "healthy", "dood-proxy-ro": "healthy"} else None

        # The healthcheck's /_ping passes only when the proxy reaches its engine with the socket's group.
        found = wait_for(
            "dood-proxy and dood-proxy-ro healthy (their /_ping reaches the engine of DOOD_DOCKER_SOCKET)",
            healthy,
            timeout=120,
            describe=lambda: (
                f"states: { {s: c.status for s, c in proxies().items()} }; logs: "
                + subprocess.run(
                    [*compose, "logs", "--tail=20"], cwd=REPO, env=env, capture_output=True, text=True
                ).stdout
            ),
        )
        proxy, read_only = found["dood-proxy"], found["dood-proxy-ro"]
        mounts = {m["Destination"]: m["Source"] for m in proxy.attrs["Mounts"]}
        assert mounts.get("/var/run/docker.sock") == str(second_engine.socket), mounts

        assert _proxy_get(proxy, 2375, "/info")["DockerRootDir"] == second_root, "dood-proxy reached another engine"
        assert _proxy_get(read_only, 2376, "/info")["DockerRootDir"] == second_root, (
            "dood-proxy-ro reached another engine"
        )

        # A dood container of this stack on the second engine: the read-only proxy lists it.
        made = second_engine.api().create_container(
            BUSYBOX, "true", labels={"dood.managed": "true", "dood.stack": PROJECT}, name="dood_it_sock"
        )
        listed = _proxy_get(read_only, 2376, "/containers/json?all=1")
        assert [c["Id"] for c in listed] == [made["Id"]], (
            f"expected only {made['Id'][:12]} of the second engine: {listed}"
        )
    finally:
        started = time.monotonic()
        subprocess.run([*compose, "down", "-v", "--remove-orphans", "--timeout", "10"], cwd=REPO, capture_output=True)
        print(f"proxies down in {time.monotonic() - started:.0f}s")
        shutil.rmtree(root, ignore_errors=True)


def test_compose_setup_refuses_a_path_that_is_not_a_socket(tmp_path):
    env_file = tmp_path / "compose.env"
    env_file.write_text(f"DOOD_HOST_ROOT={tmp_path / 'dood'}\n")
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "compose-setup.sh")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "DOOD_ENV_FILE": str(env_file), "DOOD_DOCKER_SOCKET": str(tmp_path / "nothing.sock")},
        timeout=1800,
    )
    assert done.returncode != 0
    assert "DOOD_DOCKER_SOCKET=" in done.stderr and "is not a unix socket" in done.stderr, done.stderr[-2000:]
    assert not Path(tmp_path / "nothing.sock").exists()
